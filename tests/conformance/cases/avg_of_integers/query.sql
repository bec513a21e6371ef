CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT window_start, sensor_id, AVG(ms) AS avg_ms, AVG(CAST(temperature AS INT)) AS avg_t
FROM TABLE(TUMBLE(TABLE sensor_data, DESCRIPTOR(event_time), INTERVAL '30' SECOND))
GROUP BY window_start, window_end, sensor_id;
