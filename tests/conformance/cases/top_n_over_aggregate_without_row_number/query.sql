CREATE TABLE payments (
  payment_id BIGINT,
  currency STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json');


-- The three buckets with the most payments over all currencies, without the row number.
SELECT bucket, payments FROM (
  SELECT *, ROW_NUMBER() OVER (ORDER BY payments DESC, bucket ASC) AS rn
  FROM (SELECT payment_id % 11 AS bucket, COUNT(*) AS payments FROM payments WHERE currency <> 'USD' GROUP BY payment_id % 11))
WHERE rn <= 3;
