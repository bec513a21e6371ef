-- nexmark-flink's datagen table over ${DATA}/nexmark.json, and its person, auction and bid views.
${NEXMARK_TABLES}

SELECT auction, bidder, price, channel, url, B.`dateTime`, B.extra,
       itemName, description, initialBid, reserve, A.`dateTime`, expires, seller, category, A.extra
FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;
