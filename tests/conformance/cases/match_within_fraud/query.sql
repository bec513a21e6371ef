CREATE TABLE transactions (
  card_id STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/transactions.json', 'format' = 'json');

SELECT * FROM transactions
  MATCH_RECOGNIZE (
    PARTITION BY card_id
    ORDER BY ts
    MEASURES
      SMALL.ts AS small_ts,
      SMALL.amount AS small_amount,
      BIG.ts AS big_ts,
      BIG.amount AS big_amount,
      BIG.country AS big_country
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (SMALL BIG) WITHIN INTERVAL '5' SECOND
    DEFINE
      SMALL AS SMALL.amount < 50,
      BIG AS BIG.amount > 500 AND BIG.country <> SMALL.country
  ) AS alerts;
