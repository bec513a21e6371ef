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
      COUNT(B.price) AS bs,
      COUNT(C.price) AS cs,
      D.price AS d_price,
      MATCH_ROWTIME() AS mt
    AFTER MATCH SKIP TO LAST B
    PATTERN (A B{1,3}? C*? D)
    DEFINE
      A AS A.tax = 2,
      B AS B.price >= A.price,
      C AS C.tax <> 3,
      D AS D.price < FIRST(B.price)
  );
