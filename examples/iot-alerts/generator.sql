-- Simulated sensors: 20 sensors send readings to the Kafka topic 'sensors'.
CREATE TABLE readings (
  id BIGINT,
  temperature DOUBLE,
  event_time TIMESTAMP(3)
) WITH (
  'connector' = 'datagen', @ROWS@
  'rows-per-second' = '@RATE@',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000000',
  'fields.temperature.min' = '60', 'fields.temperature.max' = '120',
  'fields.event_time.max-past' = '2 s'
);

CREATE TABLE sensors (sensor_id STRING, temperature DOUBLE, event_time TIMESTAMP(3)) WITH (
  'connector' = 'kafka',
  'topic' = 'sensors',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'format' = 'json'
);

INSERT INTO sensors
SELECT CONCAT('sensor-', CAST(MOD(id, 20) AS STRING)), temperature, event_time FROM readings;
