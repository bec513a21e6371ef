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
      FIRST(B.price) AS b_first,
      LAST(B.price) AS b_last,
      COUNT(B.price) AS b_count,
      C.price AS c_price,
      MATCH_ROWTIME() AS mt
    AFTER MATCH SKIP TO NEXT ROW
    PATTERN (A B{2,4} C)
    DEFINE
      A AS A.price < 20,
      B AS B.price >= A.price,
      C AS C.price < A.price
  ) MR;
