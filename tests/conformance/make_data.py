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
