-- Simulated sensors: 20 sensors publish readings over MQTT to sensors/<sensor>/temperature.
-- Their event time runs from the start of 2026, 10 ms a reading.
CREATE TABLE readings (
  id BIGINT,
  temperature DOUBLE
) WITH (
  'connector' = 'datagen', @ROWS@
  'rows-per-second' = '@RATE@',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000000',
  'fields.temperature.min' = '60', 'fields.temperature.max' = '120'
);

CREATE TABLE sensors (sensor_id STRING, temperature DOUBLE, event_time TIMESTAMP(3)) WITH (
  'connector' = 'mqtt',
  'url' = '@MQTT_URL@',
  'topic' = 'sensors/{sensor_id}/temperature',
  'format' = 'json'
);

INSERT INTO sensors
SELECT CONCAT('sensor-', CAST(MOD(id, 20) AS STRING)), temperature,
       TIMESTAMPADD(SECOND, CAST(id / 100 AS INT), TIMESTAMP '2026-01-01 00:00:00')
FROM readings;
