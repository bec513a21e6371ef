"""Crash soak: the suite's crash test (crates/sluice/tests/crash_exactly_once.rs), longer. A job
reads Kafka (two partitions of a `sluice broker`, filled while it runs) and writes a windowed
aggregate exactly once to files, to PostgreSQL and to a Kafka topic (transactions); it is
killed with SIGKILL at random moments, KILLS times, and started again each time. Its output
must then equal that of one uninterrupted run, row for row, in all three sinks (the topic read
with kcat and isolation.level=read_committed). Every few kills the broker is killed and
restarted too (--broker-every).

    cargo build --release
    python3 tests/crash_soak.py [--kills 200] [--rounds 3000] [--seed 1] [--broker-every 25]

Needs kcat, psql and a PostgreSQL server on 127.0.0.1:5432 (user postgres, database test),
as the suite does. Exits non-zero on any difference.
"""
import argparse
import datetime
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
SENSORS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql):
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-At",
                          "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr}")
    return out.stdout


def script(bootstrap, out_dir, table, name, rounds):
    per_partition = rounds * SENSORS
    return f"""SET 'pipeline.name' = '{name}';
SET 'execution.checkpointing.interval' = '300 ms';
SET 'state.checkpoints.num-retained' = '3';
CREATE TABLE readings (sensor STRING, temperature INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'readings',
  'properties.bootstrap.servers' = '{bootstrap}', 'properties.group.id' = '{name}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'specific-offsets',
  'scan.bounded.specific-offsets' = 'partition:0,offset:{per_partition};partition:1,offset:{per_partition}',
  'format' = 'json'
);
CREATE TABLE files (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT)
  WITH ('connector' = 'filesystem', 'path' = '{out_dir}', 'format' = 'csv');
CREATE TABLE db (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT)
  WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/test',
        'table-name' = '{table}', 'username' = 'postgres');
CREATE TABLE topic (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT) WITH (
  'connector' = 'kafka', 'topic' = '{name}-out', 'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{name}'
);
CREATE TEMPORARY VIEW per_second AS
SELECT sensor, window_start, COUNT(*) AS readings, SUM(temperature) AS total
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end;
INSERT INTO files SELECT * FROM per_second;
INSERT INTO db SELECT * FROM per_second;
INSERT INTO topic SELECT * FROM per_second;
"""


def round_lines(r, p):
    base = datetime.datetime(2023, 11, 14, 22, 13, 20)
    lines = []
    for k in range(SENSORS):
        t = base + datetime.timedelta(milliseconds=r * 100)
        lines.append('{"sensor":"s%d","temperature":%d,"ts":"%s"}' % (
            k, (r * 7 + k * 3 + p) % 50, t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]))
    return "\n".join(lines) + "\n"


class Broker:
    def __init__(self, sluice, data_dir):
        self.sluice, self.data_dir, self.port = sluice, data_dir, free_port()
        self.proc = None
        self.start()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([self.sluice, "broker", "--listen", self.bootstrap,
                                      "--data-dir", self.data_dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        sys.exit("the broker did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def produce(bootstrap, rounds):
    for p in range(2):
        lines = "".join(round_lines(r, p) for r in rounds)
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", "readings", "-p", str(p)],
                       input=lines, text=True, check=True)


def file_rows(d):
    rows = []
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if not name.startswith("."):
            with open(os.path.join(d, name)) as f:
                rows.extend(line for line in f.read().splitlines() if line)
    return sorted(rows)


def topic_rows(bootstrap, topic):
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q",
                          "-X", "isolation.level=read_committed"],
                         capture_output=True, text=True, timeout=120)
    return sorted(line for line in out.stdout.splitlines() if line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3000, help="input rounds (100 ms of event time each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--broker-every", type=int, default=25, help="restart the broker every N kills (0: never)")
    ap.add_argument("--debug", action="store_true", help="use target/debug/sluice")
    args = ap.parse_args()
    sluice = os.path.join(target, "debug" if args.debug else "release", "sluice")
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="sluice-soak-")
    broker = Broker(sluice, os.path.join(tmp, "broker"))
    subprocess.run([sluice, "topics", "create", "readings", "--partitions", "2", "-b",
                    broker.bootstrap], check=True, capture_output=True)
    for t in ["soak_out", "soak_expected"]:
        psql(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (sensor text, window_start timestamp(3), "
             "readings bigint, total int)")
    state = os.path.join(tmp, "state")
    sql_path = os.path.join(tmp, "soak.sql")
    with open(sql_path, "w") as f:
        f.write(script(broker.bootstrap, os.path.join(tmp, "out"), "soak_out", "soak", args.rounds))

    def start_job():
        return subprocess.Popen([sluice, "run", "--data-dir", state, sql_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    produce(broker.bootstrap, range(0, 20))
    produced, kills, restores, broker_restarts = 20, 0, 0, 0
    started = time.time()
    job = start_job()
    # Produce at a pace that spreads the input over the kills (about 0.7 s apart).
    per_tick = max(1, round(args.rounds / (max(args.kills, 1) * 8)))
    while kills < args.kills:
        until = time.time() + rng.uniform(0.25, 1.2)
        while time.time() < until:
            if produced < args.rounds:
                nxt = min(produced + per_tick, args.rounds)
                produce(broker.bootstrap, range(produced, nxt))
                produced = nxt
            time.sleep(0.1)
        if job.poll() is not None:
            err = job.stderr.read()
            if job.returncode != 0:
                sys.exit(f"the job failed:\n{err[-3000:]}")
            break
        job.send_signal(signal.SIGKILL)
        err = job.communicate()[1]
        kills += 1
        restores += "Restoring job" in err
        if args.broker_every and kills % args.broker_every == 0:
            broker.kill()
            time.sleep(rng.uniform(0.1, 1.0))
            broker.start()
            broker_restarts += 1
        if kills % 10 == 0:
            print(f"{kills} kills, {restores} runs restored, {broker_restarts} broker restarts, "
                  f"{produced}/{args.rounds} rounds produced, {time.time() - started:.0f} s", flush=True)
        job = start_job()
    if produced < args.rounds:
        produce(broker.bootstrap, range(produced, args.rounds))
    err = job.communicate(timeout=600)[1]
    if job.returncode != 0:
        sys.exit(f"the last run failed:\n{err[-3000:]}")
    print(f"{kills} kills, {restores} runs restored from a checkpoint, {broker_restarts} broker "
          f"restarts, {time.time() - started:.0f} s", flush=True)

    ref_path = os.path.join(tmp, "reference.sql")
    with open(ref_path, "w") as f:
        f.write(script(broker.bootstrap, os.path.join(tmp, "expected"), "soak_expected",
                       "soak-reference", args.rounds))
    subprocess.run([sluice, "run", "--data-dir", state, ref_path], check=True,
                   capture_output=True)
    windows = args.rounds // 10 * SENSORS
    failures = []
    for what, got, expected in [
        ("files", file_rows(os.path.join(tmp, "out")), file_rows(os.path.join(tmp, "expected"))),
        ("PostgreSQL", psql("SELECT * FROM soak_out ORDER BY 1, 2").splitlines(),
         psql("SELECT * FROM soak_expected ORDER BY 1, 2").splitlines()),
        ("Kafka (read_committed)", topic_rows(broker.bootstrap, "soak-out"),
         topic_rows(broker.bootstrap, "soak-reference-out")),
    ]:
        if got != expected or len(expected) != windows:
            failures.append(f"{what}: {len(got)} rows, expected {len(expected)} "
                            f"(of {windows} windows)")
        else:
            print(f"ok: {what}: {len(got)} rows, each once")
    broker.kill()
    if failures:
        sys.exit("MISMATCH\n" + "\n".join(failures) + f"\n(kept: {tmp})")
    subprocess.run(["rm", "-rf", tmp])
    print("every sink equals the uninterrupted run")


if __name__ == "__main__":
    main()
