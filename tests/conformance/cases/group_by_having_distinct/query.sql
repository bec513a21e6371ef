CREATE TABLE clicks (
  user_id STRING,
  url STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/clicks.json', 'format' = 'json');

SELECT user_id, COUNT(DISTINCT url) AS pages, COUNT(*) AS clicks
FROM clicks
GROUP BY user_id
HAVING COUNT(*) > 3;
