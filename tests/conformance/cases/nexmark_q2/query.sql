-- nexmark-flink's datagen table over ${DATA}/nexmark.json, and its person, auction and bid views.
${NEXMARK_TABLES}

SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
