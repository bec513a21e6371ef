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

SELECT s.ad_id AS shown_ad, s.shows, k.ad_id AS clicked_ad, k.clicks, k.spent
FROM (SELECT ad_id, COUNT(*) AS shows FROM impressions GROUP BY ad_id) s
FULL OUTER JOIN (SELECT ad_id, COUNT(*) AS clicks, SUM(cost) AS spent FROM ad_clicks GROUP BY ad_id) k
  ON s.ad_id = k.ad_id;
