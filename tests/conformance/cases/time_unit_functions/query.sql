CREATE TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  event_time TIMESTAMP(3),
  ms BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/sensors.json', 'format' = 'json');

SELECT sensor_id, event_time,
  YEAR(event_time) AS c_year, QUARTER(event_time) AS c_quarter, MONTH(event_time) AS c_month, WEEK(event_time) AS c_week,
  DAYOFYEAR(event_time) AS c_doy, DAYOFMONTH(event_time) AS c_dom, DAYOFWEEK(event_time) AS c_dow,
  HOUR(event_time) AS c_hour, MINUTE(event_time) AS c_minute, SECOND(event_time) AS c_second,
  TIMESTAMPDIFF(SECOND, TIMESTAMP '2024-01-01 09:59:00', event_time) AS d_seconds,
  TIMESTAMPDIFF(MINUTE, event_time, TIMESTAMP '2024-01-01 09:00:00') AS d_minutes,
  TIMESTAMPDIFF(MONTH, TIMESTAMP '2023-02-01 10:00:30', event_time) AS d_months,
  TIMESTAMPDIFF(YEAR, TIMESTAMP '2021-01-01 10:00:00', event_time) AS d_years,
  TIMESTAMPDIFF(WEEK, TIMESTAMP '2023-12-01 00:00:00', event_time) AS d_weeks
FROM sensor_data
WHERE temperature > 108;
