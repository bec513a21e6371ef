CREATE TABLE transactions (
  card_id STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/transactions.json', 'format' = 'json');

CREATE TEMPORARY VIEW home_runs AS
SELECT * FROM transactions
  MATCH_RECOGNIZE (
    ORDER BY ts
    MEASURES
      MATCH_ROWTIME() AS mt,
      SUM(A.amount) AS total
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A{3})
    DEFINE
      A AS A.country = 'DE'
  );

SELECT window_start, window_end, COUNT(*) AS runs, SUM(total) AS total
FROM TABLE(TUMBLE(TABLE home_runs, DESCRIPTOR(mt), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end;
