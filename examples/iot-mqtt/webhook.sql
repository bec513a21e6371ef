
-- With WEBHOOK_URL set: each alert posted there, Slack-style.
CREATE TABLE alert_hook (sensor_id STRING, readings BIGINT, window_end TIMESTAMP(3)) WITH (
  'connector' = 'webhook',
  'url' = '@WEBHOOK_URL@',
  'body.template' = '{"text": "{sensor_id} read above 100 degrees {readings} times in the 10 s up to {window_end}"}',
  'sink.max-retries' = '5'
);
INSERT INTO alert_hook SELECT * FROM hot_sensors;
