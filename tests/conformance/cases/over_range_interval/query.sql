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

SELECT ad_id, ts, cost,
  SUM(cost) OVER (PARTITION BY ad_id ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS spent_10s,
  COUNT(*) OVER (PARTITION BY ad_id ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS clicks_10s
FROM ad_clicks;
