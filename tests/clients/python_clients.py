"""Exercises the broker with confluent-kafka and kafka-python: admin create/list/delete,
keyed produce with compression, a consumer group of two confluent-kafka members (each
message once), kafka-python group consume and commit, offsets_for_times. Prints one
"ok: ..." line per check and exits non-zero on the first failure.

    python python_clients.py BOOTSTRAP
"""
import sys
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic as CNewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

b = sys.argv[1]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


# --- confluent-kafka admin
admin = AdminClient({"bootstrap.servers": b})
for f in admin.create_topics([CNewTopic("ck-topic", num_partitions=4, replication_factor=1)]).values():
    f.result(10)
md = admin.list_topics(timeout=10)
check(len(md.topics["ck-topic"].partitions) == 4, "confluent-kafka creates a topic with 4 partitions")
dup = admin.create_topics([CNewTopic("ck-topic", num_partitions=1, replication_factor=1)])["ck-topic"]
try:
    dup.result(10)
    check(False, "creating an existing topic fails")
except Exception as e:
    check("TOPIC_ALREADY_EXISTS" in str(e), "creating an existing topic fails with TOPIC_ALREADY_EXISTS")

# --- confluent-kafka keyed produce, zstd
p = Producer({"bootstrap.servers": b, "compression.type": "zstd", "acks": "all"})
for i in range(200):
    p.produce("ck-topic", key=f"user-{i % 17}", value=f"event-{i}")
check(p.flush(30) == 0, "confluent-kafka produces 200 keyed messages")

# --- a consumer group of two members: every message once, the partitions shared
results = {0: [], 1: []}
stop = threading.Event()


def member(n):
    c = Consumer({"bootstrap.servers": b, "group.id": "ck-group", "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe(["ck-topic"])
    while not stop.is_set():
        m = c.poll(0.2)
        if m is not None and not m.error():
            results[n].append((m.partition(), m.key().decode(), m.value().decode()))
    c.close()


threads = [threading.Thread(target=member, args=(n,)) for n in (0, 1)]
for t in threads:
    t.start()
deadline = time.time() + 40
while time.time() < deadline and len(results[0]) + len(results[1]) < 200:
    time.sleep(0.1)
time.sleep(1)
stop.set()
for t in threads:
    t.join()
values = sorted(v for n in (0, 1) for (_, _, v) in results[n])
check(values == sorted(f"event-{i}" for i in range(200)), "two group members read every message exactly once")
parts = [set(p for (p, _, _) in results[n]) for n in (0, 1)]
check(parts[0] and parts[1] and not (parts[0] & parts[1]), "the members share the partitions")
key_partition = {}
for n in (0, 1):
    for (p_, k, _) in results[n]:
        check_same = key_partition.setdefault(k, p_) == p_
        if not check_same:
            check(False, f"key {k} in two partitions")
check(True, "equal keys are in one partition")

# --- kafka-python: produce gzip, one batch per message, with timestamps
kadmin = KafkaAdminClient(bootstrap_servers=b)
kadmin.create_topics([NewTopic("kp-topic", num_partitions=1, replication_factor=1)])
check("kp-topic" in kadmin.list_topics(), "kafka-python creates a topic")
kp = KafkaProducer(bootstrap_servers=b, compression_type="gzip", acks="all")
for i in range(20):
    kp.send("kp-topic", key=b"k", value=f"m{i}".encode(), timestamp_ms=1_700_000_000_000 + i * 1000).get(10)
kp.flush()
c = KafkaConsumer("kp-topic", bootstrap_servers=b, group_id="kp-group", auto_offset_reset="earliest",
                  consumer_timeout_ms=5000, enable_auto_commit=False)
got = [m.value.decode() for m in c]
check(got == [f"m{i}" for i in range(20)], "kafka-python consumes in order")
c.commit()
tp = TopicPartition("kp-topic", 0)
check(c.committed(tp) == 20, "kafka-python commits its offset")
found = c.offsets_for_times({tp: 1_700_000_005_000})[tp]
check(found is not None and found.offset == 5, "offsets_for_times finds the first offset at a timestamp")
check(c.offsets_for_times({tp: 1_800_000_000_000})[tp] is None, "offsets_for_times past the end finds nothing")
c.close()
# Many records in one uncompressed batch: the lookup finds the exact record.
kadmin.create_topics([NewTopic("kp-times", num_partitions=1, replication_factor=1)])
kb = KafkaProducer(bootstrap_servers=b, linger_ms=500, batch_size=1 << 20)
futures = [kb.send("kp-times", value=f"t{i}".encode(), timestamp_ms=1_700_000_000_000 + i * 1000) for i in range(20)]
kb.flush()
check(len({f.get(10).offset for f in futures}) == 20, "20 records produced in one go")
tpt = TopicPartition("kp-times", 0)
ct = KafkaConsumer(bootstrap_servers=b)
at = ct.offsets_for_times({tpt: 1_700_000_007_500})[tpt]
ct.close()
check(at is not None and at.offset == 8 and at.timestamp == 1_700_000_008_000,
      f"offsets_for_times finds the record inside a batch (got {at})")
c2 = KafkaConsumer("kp-topic", bootstrap_servers=b, group_id="kp-group", consumer_timeout_ms=3000)
check([m.value for m in c2] == [], "a new member of the group resumes after the committed offset")
c2.close()

# --- configs and partitions
from confluent_kafka.admin import ConfigResource, NewPartitions
res = ConfigResource(ConfigResource.Type.TOPIC, "ck-topic")
cfg = admin.describe_configs([res])[res].result(10)
check(cfg["cleanup.policy"].value == "delete" and "retention.ms" in cfg, "describe_configs returns the topic's configuration")
for f in admin.create_partitions([NewPartitions("ck-topic", 6)]).values():
    f.result(10)
check(len(admin.list_topics(timeout=10).topics["ck-topic"].partitions) == 6, "create_partitions grows a topic to 6")
shrink = admin.create_partitions([NewPartitions("ck-topic", 2)])["ck-topic"]
try:
    shrink.result(10)
    check(False, "shrinking a topic fails")
except Exception as e:
    check("INVALID_PARTITIONS" in str(e), "shrinking a topic fails with INVALID_PARTITIONS")

# --- per-topic configuration
for f in admin.create_topics([CNewTopic("ck-configured", num_partitions=1, replication_factor=1,
                                        config={"retention.ms": "60000", "flush.messages": "1000"})]).values():
    f.result(10)
res = ConfigResource(ConfigResource.Type.TOPIC, "ck-configured")
cfg = admin.describe_configs([res])[res].result(10)
check(cfg["retention.ms"].value == "60000" and cfg["retention.ms"].source == 1,  # DYNAMIC_TOPIC_CONFIG
      "a topic created with retention.ms shows it as a topic override")
bad = admin.create_topics([CNewTopic("ck-compacted", num_partitions=1, replication_factor=1,
                                     config={"cleanup.policy": "compact"})])["ck-compacted"]
try:
    bad.result(10)
    check(False, "an unsupported topic config is refused")
except Exception as e:
    check("INVALID_CONFIG" in str(e), "an unsupported topic config is refused with INVALID_CONFIG")
for f in admin.delete_topics(["ck-configured"]).values():
    f.result(10)

# --- delete with both admin clients
kadmin.delete_topics(["kp-topic"])
for f in admin.delete_topics(["ck-topic"]).values():
    f.result(10)
time.sleep(0.2)
left = set(admin.list_topics(timeout=10).topics)
check("ck-topic" not in left and "kp-topic" not in left, "both admin clients delete topics")
print("all checks passed")
