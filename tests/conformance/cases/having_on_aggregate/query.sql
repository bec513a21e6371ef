CREATE TABLE clicks (
  user_id STRING,
  url STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/clicks.json', 'format' = 'json');

SELECT user_id, TUMBLE_START(ts, INTERVAL '30' SECOND) AS ws, COUNT(*) AS c
FROM clicks
GROUP BY user_id, TUMBLE(ts, INTERVAL '30' SECOND)
HAVING COUNT(*) >= 3 AND MAX(url) <> '/p9';
