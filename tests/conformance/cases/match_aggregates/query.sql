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
      FIRST(A.rowtime) AS start_tstamp,
      LAST(A.rowtime) AS end_tstamp,
      AVG(A.price) AS avg_price,
      SUM(A.tax) AS taxes,
      COUNT(A.price) AS n,
      MIN(A.price) AS lo,
      MAX(A.price) AS hi,
      B.price AS next_price
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A+ B)
    DEFINE
      A AS AVG(A.price) < 15
  ) MR;
