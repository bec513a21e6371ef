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


-- A window semi join: the payments of each 30 s window whose currency had a new rate in the
-- same window (append-only, emitted when the window closes).
SELECT L.payment_id, L.currency, L.window_start, L.window_end
FROM (SELECT * FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(ts), INTERVAL '30' SECOND))) L
WHERE L.currency IN (
  SELECT R.currency
  FROM (SELECT * FROM TABLE(TUMBLE(TABLE rates, DESCRIPTOR(update_time), INTERVAL '30' SECOND))) R
  WHERE L.window_start = R.window_start AND L.window_end = R.window_end);
