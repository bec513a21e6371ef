CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, temperature, window_start, window_end, window_time
FROM TABLE(HOP(TABLE sensor_data, DESCRIPTOR(event_time), INTERVAL '10' SECOND, INTERVAL '20' SECOND))
WHERE temperature > 112;
