-- nexmark-flink's datagen table over ${DATA}/nexmark.json, and its person, auction and bid views.
${NEXMARK_TABLES}

SELECT auction, bidder, price, channel, url, `dateTime`, extra
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY `dateTime` DESC) AS rank_number
      FROM bid)
WHERE rank_number <= 1;
