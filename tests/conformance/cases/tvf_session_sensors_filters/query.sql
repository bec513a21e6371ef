CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, window_start, window_end, COUNT(*) AS readings,
  COUNT(*) FILTER (WHERE temperature > 100) AS hot, MIN(temperature) AS low, MAX(temperature) AS high,
  COUNT(DISTINCT CAST(temperature AS BIGINT)) AS degrees, SUM(ms - 1704103000000) AS ms_total
FROM TABLE(SESSION(TABLE sensor_data PARTITION BY sensor_id, DESCRIPTOR(event_time), INTERVAL '1' SECOND))
GROUP BY sensor_id, window_start, window_end;
