CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT window_start, window_end, sensor_id, COUNT(*) AS cnt
FROM TABLE(HOP(TABLE sensor_data, DESCRIPTOR(event_time), INTERVAL '5' SECOND, INTERVAL '15' SECOND))
GROUP BY window_start, window_end, sensor_id;
