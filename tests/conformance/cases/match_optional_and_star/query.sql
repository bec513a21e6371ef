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
      A.price AS a_price,
      B.price AS b_price,
      COUNT(C.price) AS c_count,
      D.price AS d_price
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B? C* D)
    DEFINE
      A AS A.tax = 3,
      B AS B.tax = 1,
      C AS C.price > A.price,
      D AS D.price <= A.price
  ) MR;
