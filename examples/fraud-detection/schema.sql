DROP TABLE IF EXISTS fraud_alerts;
CREATE TABLE fraud_alerts (
  card_id text, small_ts timestamp(3), small_amount double precision, home text,
  big_ts timestamp(3), big_amount double precision, abroad text
);
