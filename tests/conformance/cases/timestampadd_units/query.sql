CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, event_time,
  TIMESTAMPADD(SECOND, 90, event_time) AS plus_seconds,
  TIMESTAMPADD(MINUTE, -5, event_time) AS minus_minutes,
  TIMESTAMPADD(HOUR, 25, event_time) AS plus_hours,
  TIMESTAMPADD(DAY, 31, event_time) AS plus_days,
  TIMESTAMPADD(WEEK, 2, event_time) AS plus_weeks,
  TIMESTAMPADD(MONTH, 1, TIMESTAMP '2024-01-31 10:00:00') AS end_of_february,
  TIMESTAMPADD(QUARTER, -1, event_time) AS minus_quarter,
  TIMESTAMPADD(YEAR, 1, TIMESTAMP '2024-02-29 00:00:00') AS leap_day_plus_year,
  TIMESTAMPADD(MONTH, CAST(NULL AS INT), event_time) AS null_count
FROM sensor_data
WHERE temperature > 112;
