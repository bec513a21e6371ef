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
  COUNT(*) OVER (PARTITION BY ad_id ORDER BY ts) AS n,
  MIN(cost) OVER (PARTITION BY ad_id ORDER BY ts) AS cheapest,
  AVG(cost) OVER (PARTITION BY ad_id ORDER BY ts) AS mean
FROM ad_clicks;
