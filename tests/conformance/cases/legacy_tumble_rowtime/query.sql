CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, TUMBLE_START(event_time, INTERVAL '1' MINUTE) AS ws, TUMBLE_ROWTIME(event_time, INTERVAL '1' MINUTE) AS rt, COUNT(*) AS cnt, SUM(ms) AS s
FROM sensor_data
GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), sensor_id;
