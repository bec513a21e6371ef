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

-- Conditions on one input alone: the right's filters the clicks before the join, the left's
-- cannot (a LEFT join keeps the impressions that fail it, padded), nor can a FULL join's.
SELECT i.ad_id, i.user_id, c.cost
FROM impressions i LEFT JOIN ad_clicks c
  ON i.ad_id = c.ad_id AND i.user_id <> 'u3' AND c.cost > 0.5
UNION ALL
SELECT c.ad_id, i.user_id, c.cost
FROM impressions i FULL JOIN ad_clicks c
  ON i.ad_id = c.ad_id AND i.user_id IN ('u1', 'u2') AND c.cost < 0.3;
