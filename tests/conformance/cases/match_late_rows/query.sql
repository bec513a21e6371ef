CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT * FROM sensor_data
  MATCH_RECOGNIZE (
    PARTITION BY sensor_id
    ORDER BY event_time
    MEASURES
      FIRST(LOW.event_time) AS start_time,
      LAST(HIGH.temperature) AS peak,
      AVG(HIGH.temperature) AS avg_high,
      DROP_ROW.event_time AS drop_time
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (LOW HIGH+? DROP_ROW)
    DEFINE
      LOW AS LOW.temperature < 100,
      HIGH AS HIGH.temperature >= 100,
      DROP_ROW AS DROP_ROW.temperature < LAST(HIGH.temperature) - 5
  );
