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

SELECT COALESCE(i.ad_id, c.ad_id) AS ad, i.user_id, i.ts AS shown, c.ts AS clicked
FROM impressions i FULL OUTER JOIN ad_clicks c
  ON i.ad_id = c.ad_id AND i.ts BETWEEN c.ts - INTERVAL '4' SECOND AND c.ts + INTERVAL '1' SECOND;
