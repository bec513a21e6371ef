"""Kafka transactions against the broker with confluent-kafka (librdkafka) and kcat:
commit and abort, read_committed consumers that see only committed records and stop at an
open transaction (the last stable offset), zombie fencing, consume-transform-produce with
offsets committed in the transaction, and a transaction timeout. Prints one "ok: ..." line
per check and exits non-zero on the first failure.

    python python_transactions.py BOOTSTRAP PHASE

PHASE "main" runs the checks; "open" leaves a transaction open and exits (the test then
restarts the broker); "after-restart" checks that the open transaction still holds back
read_committed readers, and that a new producer with the same id aborts it.
"""
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

b = sys.argv[1]
phase = sys.argv[2]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def create(topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": b})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        try:
            f.result(10)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def txn_producer(tid, **extra):
    conf = {"bootstrap.servers": b, "transactional.id": tid}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(20)
    return p


def read(topic, isolation, expect_at_least=0, wait=8.0, group=None):
    """Values read from the start of every partition of `topic` until `wait` passes with
    nothing new (or `expect_at_least` values are read and 1 s passes quietly)."""
    c = Consumer({"bootstrap.servers": b, "group.id": group or f"reader-{time.time()}",
                  "auto.offset.reset": "earliest", "isolation.level": isolation,
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + wait
    quiet_since = time.time()
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            if len(out) >= expect_at_least and expect_at_least > 0 and time.time() - quiet_since > 1.0:
                break
            continue
        if m.error():
            continue
        out.append(m.value().decode())
        quiet_since = time.time()
    c.close()
    return out


def kcat_committed(topic):
    out = subprocess.run(["kcat", "-b", b, "-C", "-t", topic, "-e", "-q", "-f", "%s\n",
                          "-X", "isolation.level=read_committed"],
                         capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line]


if phase == "main":
    create("tx-out", 2)
    p = txn_producer("tx-a")
    p.begin_transaction()
    for i in range(3):
        p.produce("tx-out", value=f"committed-{i}", partition=i % 2)
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(2):
        p.produce("tx-out", value=f"aborted-{i}", partition=i % 2)
    p.flush(10)
    p.abort_transaction(20)
    check(True, "a transaction commits and the next one aborts")

    committed = read("tx-out", "read_committed", expect_at_least=3)
    check(sorted(committed) == ["committed-0", "committed-1", "committed-2"],
          f"read_committed sees only the committed records: {sorted(committed)}")
    everything = read("tx-out", "read_uncommitted", expect_at_least=5)
    check(sorted(everything) == ["aborted-0", "aborted-1", "committed-0", "committed-1", "committed-2"],
          f"read_uncommitted sees the aborted records too: {sorted(everything)}")
    check(sorted(kcat_committed("tx-out")) == ["committed-0", "committed-1", "committed-2"],
          "kcat with isolation.level=read_committed sees only the committed records")

    # An open transaction holds back read_committed readers (the last stable offset)...
    p.begin_transaction()
    p.produce("tx-out", value="open-0", partition=0)
    p.flush(10)
    p2 = Producer({"bootstrap.servers": b})
    p2.produce("tx-out", value="plain-after-open", partition=0)
    p2.flush(10)
    seen = read("tx-out", "read_committed", expect_at_least=3, wait=4)
    check("plain-after-open" not in seen and "open-0" not in seen,
          "records after an open transaction wait for it (last stable offset)")
    c = Consumer({"bootstrap.servers": b, "group.id": "lso-check", "isolation.level": "read_committed"})
    low, high = c.get_watermark_offsets(TopicPartition("tx-out", 0), timeout=10)
    c.close()
    # Partition 0: committed-0, committed-2, commit marker, aborted-0, abort marker, open-0
    # (offset 5, still open), plain-after-open: the last stable offset is 5, the log end 7.
    check(high == 5, f"read_committed's high watermark is the last stable offset ({high})")

    # ... until a new producer with the same transactional.id fences the old one and aborts it.
    zombie = p
    p = txn_producer("tx-a")
    try:
        zombie.commit_transaction(10)
        check(False, "the fenced producer cannot commit")
    except KafkaException as e:
        check(e.args[0].fatal() or "fenced" in str(e).lower(),
              f"the fenced producer cannot commit ({e.args[0].name()})")
    seen = read("tx-out", "read_committed", expect_at_least=4, wait=6)
    check("plain-after-open" in seen and "open-0" not in seen,
          "the new producer's fencing aborted the open transaction and freed readers")

    # Consume-transform-produce: the input offsets commit with the output.
    create("tx-in", 1)
    plain = Producer({"bootstrap.servers": b})
    for i in range(10):
        plain.produce("tx-in", value=f"in-{i}")
    plain.flush(10)
    c = Consumer({"bootstrap.servers": b, "group.id": "ctp", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe(["tx-in"])
    got = []
    deadline = time.time() + 15
    while len(got) < 10 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    check(len(got) == 10, "the input is read")
    p.begin_transaction()
    for m in got[:6]:
        p.produce("tx-out", value="upper-" + m.value().decode().upper(), partition=1)
    p.send_offsets_to_transaction([TopicPartition("tx-in", 0, got[5].offset() + 1)],
                                  c.consumer_group_metadata(), 20)
    p.commit_transaction(20)
    committed = c.committed([TopicPartition("tx-in", 0)], timeout=10)
    check(committed[0].offset == 6, f"the group offset committed with the transaction ({committed[0].offset})")
    p.begin_transaction()
    for m in got[6:]:
        p.produce("tx-out", value="upper-" + m.value().decode().upper(), partition=1)
    p.send_offsets_to_transaction([TopicPartition("tx-in", 0, 10)], c.consumer_group_metadata(), 20)
    p.abort_transaction(20)
    committed = c.committed([TopicPartition("tx-in", 0)], timeout=10)
    check(committed[0].offset == 6, "an aborted transaction's offsets are not committed")
    c.close()
    out = [v for v in read("tx-out", "read_committed", expect_at_least=10) if v.startswith("upper-")]
    check(sorted(out) == sorted(f"upper-IN-{i}" for i in range(6)),
          f"only the committed transformed records are visible: {len(out)}")

    # A transaction open longer than its timeout is aborted by the broker.
    t = txn_producer("tx-timeout", **{"transaction.timeout.ms": 1500})
    t.begin_transaction()
    t.produce("tx-out", value="timed-out", partition=0)
    t.flush(10)
    time.sleep(3)
    seen = read("tx-out", "read_committed", expect_at_least=4, wait=5)
    check("timed-out" not in seen and "plain-after-open" in seen,
          "the broker aborts a transaction past transaction.timeout.ms")
    try:
        t.commit_transaction(10)
        check(False, "a timed-out transaction cannot commit")
    except KafkaException as e:
        check(True, f"a timed-out transaction cannot commit ({e.args[0].name()})")
    print("all checks passed", flush=True)

elif phase == "open":
    create("tx-restart", 1)
    p = txn_producer("tx-r")
    p.begin_transaction()
    p.produce("tx-restart", value="committed-before")
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce("tx-restart", value="open-at-restart")
    p.flush(10)
    print("transaction left open", flush=True)
    # Exit without ending it: the broker is restarted next.

elif phase == "after-restart":
    plain = Producer({"bootstrap.servers": b})
    plain.produce("tx-restart", value="plain-after-restart")
    plain.flush(10)
    seen = read("tx-restart", "read_committed", expect_at_least=1, wait=4)
    check(seen == ["committed-before"],
          f"after a restart, the open transaction still holds back readers: {seen}")
    p = txn_producer("tx-r")
    seen = read("tx-restart", "read_committed", expect_at_least=2, wait=6)
    check(seen == ["committed-before", "plain-after-restart"],
          f"a new producer aborts the transaction left open across the restart: {seen}")
    print("all checks passed", flush=True)
