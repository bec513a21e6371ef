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

-- Correlated scalar subqueries: per payment, how many rates its currency had and the lowest
-- (0 and NULL for a currency without rates).
SELECT p.payment_id, p.currency,
  (SELECT COUNT(*) FROM rates r WHERE r.currency = p.currency) AS updates,
  (SELECT MIN(r.rate) FROM rates r WHERE r.currency = p.currency) AS lowest
FROM payments p
WHERE p.payment_id < 60;
