CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

CREATE VIEW hot AS SELECT sensor_id, temperature, event_time FROM sensor_data WHERE temperature > 105;

SELECT window_start, window_end, sensor_id, COUNT(*) AS cnt
FROM TABLE(TUMBLE(TABLE hot, DESCRIPTOR(event_time), INTERVAL '30' SECOND))
GROUP BY window_start, window_end, sensor_id;
