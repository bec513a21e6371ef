-- Simulated card transactions: 50 cards, mostly small purchases at home (DE), now and then
-- one abroad, half of those large, to the Kafka topic 'transactions'.
CREATE TABLE raw_transactions (
  id BIGINT,
  r INT,
  small DOUBLE,
  large DOUBLE,
  ts TIMESTAMP(3)
) WITH (
  'connector' = 'datagen', @ROWS@
  'rows-per-second' = '@RATE@',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000000',
  'fields.r.min' = '0', 'fields.r.max' = '99',
  'fields.small.min' = '1', 'fields.small.max' = '150',
  'fields.large.min' = '500', 'fields.large.max' = '5000',
  'fields.ts.max-past' = '2 s'
);

CREATE TABLE transactions (card_id STRING, amount DOUBLE, country STRING, ts TIMESTAMP(3)) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'format' = 'json'
);

INSERT INTO transactions
SELECT
  CONCAT('card-', CAST(MOD(id, 50) AS STRING)),
  CASE WHEN r >= 85 AND MOD(id, 2) = 0 THEN large ELSE small END,
  CASE WHEN r >= 92 THEN 'FR' WHEN r >= 85 THEN 'US' ELSE 'DE' END,
  ts
FROM raw_transactions;
