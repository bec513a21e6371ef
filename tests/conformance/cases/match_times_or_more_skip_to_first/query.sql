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
      FIRST(A.rowtime) AS first_a,
      LAST(B.rowtime) AS last_b,
      SUM(B.tax) AS b_taxes
    AFTER MATCH SKIP TO FIRST B
    PATTERN (A B{2,} C)
    DEFINE
      A AS A.price > 15,
      B AS B.price > 15,
      C AS C.price <= 15 OR C.tax = 3
  ) MR;
