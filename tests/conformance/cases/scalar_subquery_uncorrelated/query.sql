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

-- A scalar subquery is a join with its one row: the payments above the highest rate times 300.
SELECT payment_id, currency, amount
FROM payments
WHERE amount > (SELECT MAX(rate) FROM rates) * 300;
