-- nexmark-flink's datagen table over ${DATA}/nexmark.json, and its person, auction and bid views.
${NEXMARK_TABLES}

SELECT auction, bidder, price, channel,
       SPLIT_INDEX(url, '/', 3) AS dir1, SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3
FROM bid;
