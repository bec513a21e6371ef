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

SELECT ad_id, 'shown' AS what, COUNT(*) AS n FROM impressions GROUP BY ad_id
UNION ALL
SELECT ad_id, 'clicked' AS what, COUNT(*) AS n FROM ad_clicks GROUP BY ad_id;
