CREATE TABLE ticker (
  symbol STRING,
  price INT,
  tax INT,
  rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/ticker.json', 'format' = 'json');

SELECT * FROM ticker
  MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
      SUM(A.price * A.tax) AS weighted,
      AVG(A.price * 2 + A.tax) AS avg_mixed,
      MAX(A.price - A.tax) AS net_max,
      COUNT(A.price) AS n,
      MATCH_ROWTIME(rowtime) AS mt,
      B.price AS b_price
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A{2,} B)
    DEFINE
      A AS SUM(A.price * A.tax) < 150,
      B AS B.tax = 3
  );
