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
      FIRST(A.ts) AS first_ts,
      LAST(B.ts) AS last_b,
      C.amount AS c_amount,
      COUNT(B.amount) AS bs
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B+? C) WITHIN INTERVAL '30' SECOND
    DEFINE
      A AS A.country = 'DE',
      B AS B.amount < 100,
      C AS C.amount > SUM(B.amount)
  );
