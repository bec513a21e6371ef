-- Writes the Nexmark events of the nexmark_* conformance cases with Sluice's nexmark source
-- (2,000 events, 40 a second from 2026-01-01 00:00:00, short `extra` columns):
--   sluice run --quiet --data-dir /tmp/nexmark-state tests/conformance/nexmark_data.sql
--   mv /tmp/nexmark-events/part-* tests/conformance/data/nexmark.json
CREATE TABLE datagen (
    event_type INT,
    person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
               state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
    auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
                `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT,
                extra VARCHAR>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>
) WITH (
    'connector' = 'nexmark',
    'events.num' = '2000',
    'first-event.rate' = '40',
    'base-time' = '2026-01-01 00:00:00',
    'person.avg-size' = '100b',
    'auction.avg-size' = '150b',
    'bid.avg-size' = '40b'
);

CREATE TABLE events (
    event_type INT,
    person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
               state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
    auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
                `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT,
                extra VARCHAR>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>
) WITH ('connector' = 'filesystem', 'path' = '/tmp/nexmark-events', 'format' = 'json');

INSERT INTO events SELECT * FROM datagen;
