-- Page views per page per minute, printed as each minute closes, and a continuously updated
-- total per page in the PostgreSQL table 'page_totals' (upserts by page).
CREATE TABLE clicks (
  user_id STRING,
  url STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'clicks',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.group.id' = 'clickstream',
  'scan.startup.mode' = 'earliest-offset', @BOUNDED@
  'value.format' = 'json'
);

CREATE TABLE page_totals (
  url STRING,
  views BIGINT,
  last_seen TIMESTAMP(3),
  PRIMARY KEY (url) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = '@JDBC_URL@',
  'table-name' = 'page_totals',
  'username' = '@PGUSER@'
);

SELECT window_start, url, COUNT(*) AS views
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, url;

INSERT INTO page_totals
SELECT url, COUNT(*), MAX(ts) FROM clicks GROUP BY url;
