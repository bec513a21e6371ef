CREATE TABLE transactions (
  card_id STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/transactions.json', 'format' = 'json');

SELECT * FROM (SELECT card_id, amount, country, CAST(ts AS TIMESTAMP(0)) AS sec, ts FROM transactions)
  MATCH_RECOGNIZE (
    PARTITION BY country
    ORDER BY ts, amount DESC
    MEASURES
      FIRST(X.card_id) AS first_card,
      LAST(X.card_id) AS last_card,
      SUM(X.amount) AS amount,
      LAST(Y.amount) AS y_amount
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (X{2} Y)
    DEFINE
      X AS X.amount < 100,
      Y AS Y.amount >= 100
  );
