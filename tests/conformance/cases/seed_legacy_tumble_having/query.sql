CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, COUNT(*), TUMBLE_END(event_time, INTERVAL '10' SECOND) AS window_end
FROM sensor_data
WHERE temperature > 100
GROUP BY sensor_id, TUMBLE(event_time, INTERVAL '10' SECOND)
HAVING COUNT(*) > 5;
