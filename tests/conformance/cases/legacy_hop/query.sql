CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, HOP_START(event_time, INTERVAL '10' SECOND, INTERVAL '30' SECOND) AS ws, HOP_END(event_time, INTERVAL '10' SECOND, INTERVAL '30' SECOND) AS we, MAX(temperature) AS hi
FROM sensor_data
GROUP BY HOP(event_time, INTERVAL '10' SECOND, INTERVAL '30' SECOND), sensor_id;
