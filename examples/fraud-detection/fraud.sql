-- Fraud alerts: per card, a small transaction (under 100) followed by a large one (over 1000)
-- from another country within 5 minutes, read from Kafka, printed and written to the
-- PostgreSQL table 'fraud_alerts'.
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
  'properties.group.id' = 'fraud-detection',
  'scan.startup.mode' = 'earliest-offset', @BOUNDED@
  'format' = 'json'
);

CREATE TABLE fraud_alerts (
  card_id STRING, small_ts TIMESTAMP(3), small_amount DOUBLE, home STRING,
  big_ts TIMESTAMP(3), big_amount DOUBLE, abroad STRING
) WITH (
  'connector' = 'jdbc',
  'url' = '@JDBC_URL@',
  'table-name' = 'fraud_alerts',
  'username' = '@PGUSER@'
);

CREATE TEMPORARY VIEW alerts AS
SELECT * FROM transactions
  MATCH_RECOGNIZE (
    PARTITION BY card_id
    ORDER BY ts
    MEASURES
      SMALL.ts AS small_ts,
      SMALL.amount AS small_amount,
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

INSERT INTO fraud_alerts SELECT * FROM alerts;
SELECT * FROM alerts;
