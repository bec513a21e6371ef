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

-- A NULL among a correlated subquery's values makes NOT IN unknown for the rows it correlates
-- with (the JPY payments, once a JPY rate below 0.0067 arrives: their rows emitted before are
-- taken back). An empty subquery (USD, no currency) makes it true.
SELECT payment_id, currency
FROM payments p
WHERE payment_id < 60
  AND payment_id NOT IN (
    SELECT CASE WHEN rate < 0.0067 THEN NULL ELSE CAST(FLOOR(rate * 10) AS BIGINT) END
    FROM rates r WHERE r.currency = p.currency);
