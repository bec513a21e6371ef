CREATE TABLE impressions (
  ad_id STRING,
  user_id STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/impressions.json', 'format' = 'json');

SELECT user_id, SPLIT_INDEX(user_id, 'u', 1) AS n, SPLIT_INDEX(ad_id, 'd', 0) AS head,
  SPLIT_INDEX(ad_id, 'd', 2) AS past_end, REGEXP_EXTRACT(ad_id, 'ad([0-9])', 1) AS digit,
  REGEXP_EXTRACT(ad_id, 'a(x)?d', 1) AS no_group, REGEXP_EXTRACT(user_id, '[0-9]+') AS whole
FROM impressions;
