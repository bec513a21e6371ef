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

SELECT L.ad_id, L.user_id, R.ad_id AS clicked_ad, R.cost, L.window_start AS lws, R.window_end AS rwe
FROM (SELECT * FROM TABLE(TUMBLE(TABLE impressions, DESCRIPTOR(ts), INTERVAL '10' SECOND))) L
FULL JOIN (SELECT * FROM TABLE(TUMBLE(TABLE ad_clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))) R
ON L.ad_id = R.ad_id AND L.window_start = R.window_start AND L.window_end = R.window_end AND R.cost > 0.4;
