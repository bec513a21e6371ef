DROP TABLE IF EXISTS alerts;
CREATE TABLE alerts (sensor_id text, readings bigint, window_end timestamp(3));
