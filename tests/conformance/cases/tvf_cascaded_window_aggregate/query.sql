CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

-- A window aggregate over a window aggregate's windows (renamed): the busiest sensor's count
-- and the number of sensors per hopping window, append-only as in Flink.
SELECT ws, we, MAX(readings) AS busiest, COUNT(*) AS sensors, SUM(readings) AS total
FROM (
  SELECT sensor_id, window_start AS ws, window_end AS we, COUNT(*) AS readings
  FROM TABLE(HOP(TABLE sensor_data, DESCRIPTOR(event_time), INTERVAL '10' SECOND, INTERVAL '30' SECOND))
  GROUP BY sensor_id, window_start, window_end
)
GROUP BY ws, we;
