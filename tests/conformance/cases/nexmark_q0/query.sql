-- nexmark-flink's datagen table over ${DATA}/nexmark.json, and its person, auction and bid views.
${NEXMARK_TABLES}

SELECT auction, bidder, price, `dateTime`, extra FROM bid;
