CREATE TABLE orders (
  order_id INT,
  product STRING,
  price DECIMAL(10, 2),
  paid BOOLEAN,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/orders.csv', 'format' = 'csv');

SELECT window_start, window_end, product, COUNT(*) AS orders, SUM(price) AS revenue, MAX(price) AS top,
  COUNT(*) FILTER (WHERE paid) AS paid_orders, SUM(CASE WHEN paid THEN price ELSE 0 END) AS paid_revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '20' SECOND))
GROUP BY window_start, window_end, product;
