CREATE TABLE payments (
  payment_id BIGINT,
  currency STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json');


-- The two biggest spenders' payment counts per currency, as payments arrive: a Top-N over an
-- updating aggregate (rows leave the top and come back as counts change).
SELECT currency, bucket, payments, total, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY currency ORDER BY total DESC, bucket) AS rn
  FROM (
    SELECT currency, payment_id % 7 AS bucket, COUNT(*) AS payments, SUM(CAST(amount AS DECIMAL(10, 2))) AS total
    FROM payments GROUP BY currency, payment_id % 7))
WHERE rn <= 2;
