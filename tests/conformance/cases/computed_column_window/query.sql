CREATE TABLE readings (
  sensor_id STRING,
  temperature DOUBLE,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  fahrenheit AS temperature * 9 / 5 + 32,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT window_start, window_end, sensor_id, MAX(fahrenheit) AS hi_f, COUNT(*) AS cnt
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '15' SECOND))
GROUP BY window_start, window_end, sensor_id;
