-- Fraud alerts to a webhook: per card, a small transaction (under 100) followed by a large one
-- (over 1000) from another country within 5 minutes, read from Kafka, printed and posted as
-- Slack messages to @WEBHOOK_URL@ (retried on failure).
CREATE TABLE transactions (
  card_id STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.group.id' = 'fraud-webhook',
  'scan.startup.mode' = 'earliest-offset', @BOUNDED@
  'format' = 'json'
);

CREATE TABLE fraud_hook (card_id STRING, home STRING, big_amount DOUBLE, abroad STRING, big_ts TIMESTAMP(3)) WITH (
  'connector' = 'webhook',
  'url' = '@WEBHOOK_URL@',
  'body.template' = '{"text": "Card {card_id}: {big_amount} spent in {abroad} at {big_ts}, minutes after a small payment in {home}"}',
  'sink.max-retries' = '5',
  'sink.retry-backoff' = '200 ms'
);

CREATE TEMPORARY VIEW alerts AS
SELECT card_id, home, big_amount, abroad, big_ts FROM transactions
  MATCH_RECOGNIZE (
    PARTITION BY card_id
    ORDER BY ts
    MEASURES
      SMALL.country AS home,
      BIG.ts AS big_ts,
      BIG.amount AS big_amount,
      BIG.country AS abroad
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (SMALL BIG) WITHIN INTERVAL '5' MINUTE
    DEFINE
      SMALL AS SMALL.amount < 100,
      BIG AS BIG.amount > 1000 AND BIG.country <> SMALL.country
  );

INSERT INTO fraud_hook SELECT * FROM alerts;
SELECT * FROM alerts;
