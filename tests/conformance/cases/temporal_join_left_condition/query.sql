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
  WATERMARK FOR update_time AS update_time - INTERVAL '2' SECOND,
  PRIMARY KEY (currency) NOT ENFORCED
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/rates.json', 'format' = 'json');

-- A LEFT temporal join: payments without a rate at their time (none yet, USD, no currency)
-- or whose rate fails the condition keep NULLs.
SELECT payment_id, p.currency, amount, rates.rate, rates.update_time
FROM payments p
LEFT JOIN rates FOR SYSTEM_TIME AS OF p.ts
ON p.currency = rates.currency AND p.amount * rates.rate > 50
WHERE p.payment_id % 3 <> 1;
