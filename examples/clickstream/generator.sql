-- Simulated visitors: 50 users clicking through 8 pages, sent to the Kafka topic 'clicks'.
CREATE TABLE visits (
  id BIGINT,
  ts TIMESTAMP(3)
) WITH (
  'connector' = 'datagen', @ROWS@
  'rows-per-second' = '@RATE@',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000000',
  'fields.ts.max-past' = '1 s'
);

CREATE TABLE clicks (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH (
  'connector' = 'kafka',
  'topic' = 'clicks',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'key.format' = 'json',
  'key.fields' = 'user_id',
  'value.format' = 'json'
);

INSERT INTO clicks
SELECT CONCAT('user-', CAST(MOD(id * 7, 50) AS STRING)), CONCAT('/page/', CAST(MOD(id, 8) AS STRING)), ts
FROM visits;
