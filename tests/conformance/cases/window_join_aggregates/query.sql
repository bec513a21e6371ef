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

SELECT L.ad_id, L.window_start, L.window_end, L.shows, R.clicks
FROM (
  SELECT ad_id, window_start, window_end, COUNT(*) AS shows
  FROM TABLE(TUMBLE(TABLE impressions, DESCRIPTOR(ts), INTERVAL '20' SECOND))
  GROUP BY ad_id, window_start, window_end
) L JOIN (
  SELECT ad_id, window_start, window_end, COUNT(*) AS clicks
  FROM TABLE(TUMBLE(TABLE ad_clicks, DESCRIPTOR(ts), INTERVAL '20' SECOND))
  GROUP BY ad_id, window_start, window_end
) R ON L.ad_id = R.ad_id AND L.window_start = R.window_start AND L.window_end = R.window_end;
