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

-- NOT IN keeps SQL's NULL semantics: a payment without a currency is not kept (its NOT IN is
-- unknown once the subquery has rows).
SELECT payment_id, currency, amount
FROM payments
WHERE currency NOT IN (SELECT currency FROM rates WHERE rate > 1.1)
  AND payment_id NOT IN (SELECT CAST(FLOOR(rate * 100) AS BIGINT) FROM rates);
