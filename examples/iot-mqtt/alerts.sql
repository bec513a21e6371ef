-- Temperature alerts over MQTT: sensors that read above 100 degrees more than 5 times in 10
-- seconds, printed and kept in Redis (the hash alert:<sensor> holds each sensor's latest).
CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
  'connector' = 'mqtt',
  'url' = '@MQTT_URL@',
  'topic' = 'sensors/+/temperature',
  'format' = 'json'
);

CREATE TABLE latest_alerts (
  sensor_id STRING, readings BIGINT, window_end TIMESTAMP(3),
  PRIMARY KEY (sensor_id) NOT ENFORCED
) WITH (
  'connector' = 'redis',
  'url' = '@REDIS_URL@',
  'key-prefix' = 'alert:'
);

CREATE TEMPORARY VIEW hot_sensors AS
SELECT sensor_id, COUNT(*) AS readings, TUMBLE_END(event_time, INTERVAL '10' SECOND) AS window_end
FROM sensor_data
WHERE temperature > 100
GROUP BY sensor_id, TUMBLE(event_time, INTERVAL '10' SECOND)
HAVING COUNT(*) > 5;

INSERT INTO latest_alerts SELECT * FROM hot_sensors;
SELECT * FROM hot_sensors;
