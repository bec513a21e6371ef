CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT UPPER(sensor_id) AS id, CHAR_LENGTH(sensor_id) AS len, ROUND(temperature, 1) AS t, MOD(ms, 7) AS m, CONCAT(sensor_id, '-', CAST(ms AS STRING)) AS tag,
  CASE WHEN temperature > 100 THEN 'hot' ELSE 'ok' END AS level, CAST(temperature AS INT) AS ti, CAST(TO_TIMESTAMP_LTZ(ms, 3) AS TIMESTAMP(3)) AS ltz, DATE_FORMAT(event_time, 'yyyy-MM-dd HH:mm') AS mi
FROM sensor_data WHERE temperature < 95;
