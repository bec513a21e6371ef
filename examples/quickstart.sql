-- The quick start: the temperature alert every stream processing guide begins with.
-- Alerts for sensors that read above 100 degrees more than 5 times in 10 seconds.
CREATE TEMPORARY TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = 'examples/data/sensors.json',
  'format' = 'json'
);

SELECT sensor_id, COUNT(*), TUMBLE_END(event_time, INTERVAL '10' SECOND) AS window_end
FROM sensor_data
WHERE temperature > 100
GROUP BY sensor_id, TUMBLE(event_time, INTERVAL '10' SECOND)
HAVING COUNT(*) > 5;
