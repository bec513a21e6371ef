CREATE TABLE impressions (
  ad_id STRING,
  user_id STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/impressions.json', 'format' = 'json');

CREATE TABLE ad_clicks (
  ad_id STRING,
  cost DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/ad_clicks.json', 'format' = 'json');

CREATE VIEW ad_events AS
SELECT ad_id, ts, 1 AS shows, 0 AS clicks FROM impressions
UNION ALL
SELECT ad_id, ts, 0 AS shows, 1 AS clicks FROM ad_clicks WHERE cost > 0.2;

SELECT window_start, window_end, ad_id, SUM(shows) AS shows, SUM(clicks) AS clicks
FROM TABLE(TUMBLE(TABLE ad_events, DESCRIPTOR(ts), INTERVAL '30' SECOND))
GROUP BY window_start, window_end, ad_id;
