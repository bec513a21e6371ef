CREATE TABLE payments (
  payment_id BIGINT,
  currency STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json');

CREATE TABLE rates (
  currency STRING,
  rate DOUBLE,
  update_time TIMESTAMP(3),
  WATERMARK FOR update_time AS update_time - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/rates.json', 'format' = 'json');


-- A window anti join: the payments of each 30 s window whose currency had no rate above 1.1
-- in the same window, counted per window.
SELECT window_start, window_end, COUNT(*) AS payments, SUM(amount) AS amount
FROM (
  SELECT * FROM (SELECT * FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(ts), INTERVAL '30' SECOND))) L
  WHERE NOT EXISTS (
    SELECT * FROM (SELECT * FROM TABLE(TUMBLE(TABLE rates, DESCRIPTOR(update_time), INTERVAL '30' SECOND))) R
    WHERE L.currency = R.currency AND R.rate > 1.1
      AND L.window_start = R.window_start AND L.window_end = R.window_end))
GROUP BY window_start, window_end;
