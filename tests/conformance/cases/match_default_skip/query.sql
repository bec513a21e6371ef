CREATE TABLE ticker (
  symbol STRING,
  price INT,
  tax INT,
  rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/ticker.json', 'format' = 'json');

SELECT symbol, s, e, p FROM ticker
  MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
      FIRST(UP.rowtime) AS s,
      LAST(UP.rowtime) AS e,
      LAST(UP.price) AS p
    PATTERN (UP{3})
    DEFINE
      UP AS UP.price > LAST(UP.price, 1) OR LAST(UP.price, 1) IS NULL
  );
