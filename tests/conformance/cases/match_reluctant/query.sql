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
      FIRST(A.rowtime) AS a_time,
      COUNT(B.price) AS b_count,
      LAST(C.price) AS c_price
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B+? C)
    DEFINE
      A AS A.tax = 1,
      B AS B.price > A.price - 3,
      C AS C.tax = 2
  ) MR;
