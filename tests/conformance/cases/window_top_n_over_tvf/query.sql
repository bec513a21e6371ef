CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT * FROM (
  SELECT sensor_id, temperature, window_start, window_end,
    ROW_NUMBER() OVER (PARTITION BY window_start, window_end, sensor_id ORDER BY temperature DESC, ms) AS rn
  FROM TABLE(TUMBLE(TABLE sensor_data, DESCRIPTOR(event_time), INTERVAL '30' SECOND))
) WHERE rn <= 1;
