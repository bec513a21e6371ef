CREATE TABLE payments (
  payment_id BIGINT,
  currency STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json');


-- A literal with a decimal point is a DECIMAL, as in Flink: exact arithmetic with integers and
-- other decimals (its scale kept), DOUBLE only with a DOUBLE. A division's scale is Flink's,
-- rounded half up. A number with an exponent is a DOUBLE.
SELECT payment_id,
  0.908 * payment_id AS scaled,
  payment_id + 1.10 AS shifted,
  0.1 + 0.2 AS exact_sum,
  amount * 0.5 AS half_amount,
  payment_id * 1.5 > 100 AS big,
  payment_id / 3.0 AS third,
  CAST(amount AS DECIMAL(10, 2)) / 7 AS seventh,
  CAST(amount AS DECIMAL(10, 2)) / -0.35 AS negative,
  payment_id * 2.5e-1 AS approximate
FROM payments
WHERE payment_id % 10 = 3;
