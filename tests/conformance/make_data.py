"""Writes the corpus's input files (deterministic). Run: python3 make_data.py"""
import datetime, json, random, os

random.seed(7)
here = os.path.dirname(os.path.abspath(__file__))
base = 1704103200000  # 2024-01-01 10:00:00 UTC


def ts(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


rows = []
for i in range(300):
    t = base + i * 700 + random.randint(-3000, 0)  # out of order by up to 3 s
    rows.append({"sensor_id": f"s{random.randint(0, 3)}", "temperature": round(90 + random.random() * 25, 2),
                 "event_time": ts(t), "ms": t})
    if i % 60 == 59:  # far behind the watermark: Flink drops these
        rows.append({"sensor_id": "s1", "temperature": 150.0, "event_time": ts(t - 40000), "ms": t - 40000})
with open(os.path.join(here, "data", "sensors.json"), "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")

# Clicks with bursts separated by pauses, for session windows.
clicks = []
t = base
for burst in range(12):
    user = f"u{burst % 3}"
    for k in range(random.randint(2, 6)):
        t += random.randint(200, 3000)
        clicks.append({"user_id": user, "url": f"/p{random.randint(1, 4)}", "ts": ts(t)})
    t += random.randint(4000, 20000)
with open(os.path.join(here, "data", "clicks.json"), "w") as f:
    for r in clicks:
        f.write(json.dumps(r) + "\n")

# Orders as CSV (no header), with decimals and booleans.
orders = []
t = base
for i in range(120):
    t += random.randint(100, 2500)
    late = i % 40 == 39
    ts_ms = t - 30000 if late else t
    orders.append(f"{i},p{random.randint(1, 5)},{random.randint(100, 99999) / 100:.2f},{'true' if random.random() < 0.7 else 'false'},{ts(ts_ms)}")
with open(os.path.join(here, "data", "orders.csv"), "w") as f:
    f.write("\n".join(orders) + "\n")

# Ad impressions and the clicks on them, for interval joins: out of order by up to 2 s (the
# tables' watermarks allow 3 s, so no row is late); most impressions get a click 0-12 s
# later, some clicks have no impression (a different ad), a few rows have no ad.
impressions, ad_clicks = [], []
t = base
for i in range(90):
    t += random.randint(200, 1500)
    ad = f"ad{random.randint(0, 5)}" if i % 23 != 22 else None
    shown = t - random.randint(0, 2000)
    impressions.append({"ad_id": ad, "user_id": f"u{random.randint(0, 9)}", "ts": ts(shown)})
    if random.random() < 0.6:
        ad_clicks.append({"ad_id": ad, "cost": round(random.random(), 2),
                          "ts_ms": shown + random.randint(0, 12000)})
    if random.random() < 0.15:
        ad_clicks.append({"ad_id": f"ad{random.randint(6, 7)}", "cost": round(random.random(), 2),
                          "ts_ms": t + random.randint(0, 3000)})
ad_clicks.sort(key=lambda c: c["ts_ms"] + random.randint(0, 1500))
with open(os.path.join(here, "data", "impressions.json"), "w") as f:
    for r in impressions:
        f.write(json.dumps(r) + "\n")
with open(os.path.join(here, "data", "ad_clicks.json"), "w") as f:
    for c in ad_clicks:
        f.write(json.dumps({"ad_id": c["ad_id"], "cost": c["cost"], "ts": ts(c["ts_ms"])}) + "\n")

# Stock ticks for MATCH_RECOGNIZE (a generator of its own, so the files above stay as they are):
# three symbols, one tick a second each, prices on a random walk, some ticks out of order.
rng = random.Random(11)
ticks = []
for sym, start in (("ACME", 20), ("BETA", 40), ("CORP", 10)):
    price = start
    for i in range(150):
        price = max(1, price + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]))
        t = base + i * 1000 + rng.randint(-1500, 0)
        ticks.append((i, {"symbol": sym, "price": price, "tax": rng.randint(1, 3), "rowtime": ts(t)}))
ticks.sort(key=lambda r: r[0])  # in the order they were due, so the jitter puts some out of order
with open(os.path.join(here, "data", "ticker.json"), "w") as f:
    for _, r in ticks:
        f.write(json.dumps(r) + "\n")

# Card transactions: mostly small and at home, now and then a large one from abroad.
txns = []
t = base
for i in range(400):
    t += rng.randint(100, 4000)
    card = f"c{rng.randint(0, 7)}"
    abroad = rng.random() < 0.2
    amount = round(rng.uniform(500, 3000) if abroad and rng.random() < 0.6 else rng.uniform(1, 120), 2)
    txns.append({"card_id": card, "amount": amount, "country": rng.choice(["FR", "US", "BR"]) if abroad else "DE",
                 "ts": ts(t)})
with open(os.path.join(here, "data", "transactions.json"), "w") as f:
    for r in txns:
        f.write(json.dumps(r) + "\n")

# Currency rates (a versioned table: one row per new rate, out of order by up to 1.5 s, some
# currencies only appearing after a while) and payments in those currencies (plus USD, which
# has no rate, and some with none), out of order by up to 2 s. (No payment is behind the
# watermark: a late payment joins whichever versions are still kept, which depends on how the
# two inputs' watermarks interleave, in Flink as here.)
rng = random.Random(13)
rates = []
for cur, start, first in (("EUR", 1.10, 0), ("GBP", 1.27, 5000), ("JPY", 0.0068, 30000), ("CHF", 1.13, 61000)):
    rate, t = start, base + first
    while t < base + 120000:
        rates.append({"currency": cur, "rate": round(rate, 4), "update_time": ts(t), "ms": t})
        rate *= 1 + rng.uniform(-0.02, 0.02)
        t += rng.randint(4000, 15000)
rates.sort(key=lambda r: r["ms"] + rng.randint(0, 1500))
with open(os.path.join(here, "data", "rates.json"), "w") as f:
    for r in rates:
        f.write(json.dumps({k: v for k, v in r.items() if k != "ms"}) + "\n")
payments = []
t = base
for i in range(160):
    t += rng.randint(200, 1400)
    cur = rng.choice(["EUR", "EUR", "GBP", "JPY", "CHF", "USD"]) if i % 37 != 36 else None
    paid = t - rng.randint(0, 2000)
    payments.append({"payment_id": i, "currency": cur, "amount": round(rng.uniform(1, 500), 2), "ts": ts(paid)})
with open(os.path.join(here, "data", "payments.json"), "w") as f:
    for r in payments:
        f.write(json.dumps(r) + "\n")
