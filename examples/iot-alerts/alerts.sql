-- The temperature alert: sensors that read above 100 degrees more than 5 times in 10 seconds,
-- read from Kafka, printed and written to the PostgreSQL table 'alerts'.
CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'sensors',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.group.id' = 'iot-alerts',
  'scan.startup.mode' = 'earliest-offset', @BOUNDED@
  'format' = 'json'
);

CREATE TABLE alerts (sensor_id STRING, readings BIGINT, window_end TIMESTAMP(3)) WITH (
  'connector' = 'jdbc',
  'url' = '@JDBC_URL@',
  'table-name' = 'alerts',
  'username' = '@PGUSER@'
);

CREATE TEMPORARY VIEW hot_sensors AS
SELECT sensor_id, COUNT(*) AS readings, TUMBLE_END(event_time, INTERVAL '10' SECOND) AS window_end
FROM sensor_data
WHERE temperature > 100
GROUP BY sensor_id, TUMBLE(event_time, INTERVAL '10' SECOND)
HAVING COUNT(*) > 5;

INSERT INTO alerts SELECT * FROM hot_sensors;
SELECT * FROM hot_sensors;
