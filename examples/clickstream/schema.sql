DROP TABLE IF EXISTS page_totals;
CREATE TABLE page_totals (url text PRIMARY KEY, views bigint, last_seen timestamp(3));
