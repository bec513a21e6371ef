CREATE TABLE payments (
  payment_id BIGINT,
  currency STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json');

CREATE TABLE rate_updates (
  currency STRING,
  rate DOUBLE,
  update_time TIMESTAMP(3),
  WATERMARK FOR update_time AS update_time - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/rates.json', 'format' = 'json');

-- A versioned view (deduplication keeps the latest rate per currency), joined as of each
-- payment's time. The payment's time stays a time attribute, so a window can follow.
CREATE VIEW latest_rates AS
SELECT currency, rate, update_time FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY currency ORDER BY update_time DESC) AS rownum
  FROM rate_updates)
WHERE rownum = 1;

CREATE VIEW converted AS
SELECT p.payment_id, p.amount, p.ts, r.currency, r.rate
FROM payments AS p
JOIN latest_rates FOR SYSTEM_TIME AS OF p.ts AS r ON p.currency = r.currency;

SELECT window_start, window_end, currency, COUNT(*) AS payments, SUM(amount) AS amount, MIN(rate) AS min_rate, MAX(rate) AS max_rate
FROM TABLE(TUMBLE(TABLE converted, DESCRIPTOR(ts), INTERVAL '30' SECOND))
GROUP BY window_start, window_end, currency;
