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
      LAST(UP.price) - FIRST(DOWN.price) AS rebound,
      CASE WHEN COUNT(DOWN.price) > 2 THEN 'long' ELSE 'short' END AS kind,
      price AS last_price,
      FIRST(price) AS first_price,
      FIRST(price, 1) AS second_price,
      LAST(rowtime) AS last_time,
      CONCAT(symbol, '!') AS tag,
      SUM(tax) AS all_taxes,
      COUNT(*) AS n_rows
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (DOWN{2,} UP)
    DEFINE
      DOWN AS LAST(DOWN.price, 1) IS NULL OR DOWN.price < LAST(DOWN.price, 1),
      UP AS UP.price > LAST(DOWN.price) + 1
  );
