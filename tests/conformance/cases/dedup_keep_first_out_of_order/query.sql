CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, temperature, event_time
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY sensor_id ORDER BY event_time) AS rn
  FROM sensor_data
) WHERE rn = 1;
