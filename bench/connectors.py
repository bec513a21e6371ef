"""Benchmark: records per second into and out of the servers the connectors speak to, through
the `sluice` binary, on this machine's Mosquitto, RabbitMQ, NATS (JetStream) and Redis, a
local HTTP receiver for the webhook sink, `sluice broker` with its schema registry for Kafka
in JSON and in Avro (`avro-confluent`), and moto's S3 server for the filesystem connector on
object storage (beside the same job on the local disk).

A sink's figure: a bounded job (datagen, N rows of a sensor reading) writing to the server,
from start to end (the end waits for every acknowledgement: PUBACKs, publisher confirms,
JetStream acks, Redis replies, HTTP answers). A source's figure: an unbounded job reading what
a sink job wrote (or, for MQTT, what it publishes while the reader is subscribed) into
blackhole, timed by its source's records out on its Prometheus endpoint until all N are read.

    cargo build --release
    python3 bench/connectors.py [--rows 200000] [--only mqtt,rabbitmq,nats,redis,webhook,postgres-cdc,kafka-avro,s3]

Needs the Python clients test.sh installs (SLUICE_VENV: pika, nats-py, moto) for set-up. Not a
test: it never fails on speed.
"""
import argparse
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
sluice = os.path.join(target, "release", "sluice")
venv = os.environ.get("SLUICE_VENV", os.path.expanduser("~/.cache/sluice-venv"))
python = os.path.join(venv, "bin", "python")
clients = os.path.join(root, "tests", "clients")

GEN = """CREATE TABLE gen (sensor STRING, temperature DOUBLE) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{n}', 'rows-per-second' = '100000000',
  'fields.sensor.length' = '8');
"""
COLUMNS = "(sensor STRING, temperature DOUBLE)"


def run_job(sql, d):
    path = os.path.join(d, f"job-{time.monotonic_ns()}.sql")
    with open(path, "w") as f:
        f.write(sql)
    start = time.perf_counter()
    p = subprocess.run([sluice, "run", "--quiet", "--data-dir", os.path.join(d, "data"), path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"sluice failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - start


def sink(name, with_clause, n, d):
    sql = GEN.format(n=n) + f"CREATE TABLE out {COLUMNS} WITH ({with_clause});\nINSERT INTO out SELECT * FROM gen;\n"
    return run_job(sql, d)


def read_source(with_clause, n, d, while_reading=None, columns=COLUMNS, prelude=""):
    """Starts an unbounded job reading the source into blackhole; returns seconds from its
    start (or, with while_reading, from the start of that) until its source has emitted n
    records."""
    sql = (f"{prelude}CREATE TABLE src {columns} WITH ({with_clause});\n"
           f"CREATE TABLE bh {columns} WITH ('connector' = 'blackhole');\n"
           "INSERT INTO bh SELECT * FROM src;\n")
    path = os.path.join(d, f"src-{time.monotonic_ns()}.sql")
    with open(path, "w") as f:
        f.write(sql)
    start = time.perf_counter()
    p = subprocess.Popen([sluice, "run", "--quiet", "--metrics-addr", "127.0.0.1:0",
                          "--data-dir", os.path.join(d, "data"), path],
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"http://([^/]+)/metrics", line)
    if not m:
        p.kill()
        sys.exit(f"no metrics address: {line}")
    addr = m.group(1)
    threading.Thread(target=p.stderr.read, daemon=True).start()
    feeder = None
    if while_reading:
        time.sleep(1.0)  # connected and subscribed
        feeder = threading.Thread(target=while_reading)
        start = time.perf_counter()
        feeder.start()
    try:
        while True:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
                text = r.read().decode()
            out = sum(float(v) for v in re.findall(
                r'^sluice_operator_records_out_total\{[^}]*operator="Source: src[^"]*"[^}]*\} (\S+)$',
                text, re.M))
            if out >= n:
                return time.perf_counter() - start
            if time.perf_counter() - start > 600:
                sys.exit(f"the source read {out} of {n} in 10 minutes")
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
        if feeder:
            feeder.join()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port):
    import socket
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def client(script, *args):
    subprocess.run([python, os.path.join(clients, script), *args], check=True,
                   capture_output=True, input="")


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--only", default="mqtt,rabbitmq,nats,redis,webhook")
    args = ap.parse_args()
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    n, only = args.rows, args.only.split(",")
    pid = os.getpid()
    results = []
    with tempfile.TemporaryDirectory() as d:
        if "mqtt" in only:
            topic = f"bench-{pid}/readings"
            mqtt = f"'connector' = 'mqtt', 'url' = 'tcp://127.0.0.1:1883', 'topic' = '{topic}', 'format' = 'json'"
            results.append(("mqtt sink (QoS 1)", n / sink("mqtt", mqtt, n, d)))
            # MQTT keeps nothing for a subscriber that is not there: publish while it reads.
            # The machine's Mosquitto drops what a subscriber falls behind by more than its
            # max_queued_messages (1000): a Mosquitto of the bench's own queues without limit.
            port = free_port()
            conf = os.path.join(d, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 0\nmax_inflight_messages 1000\npersistence false\n")
            broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                own = mqtt.replace("127.0.0.1:1883", f"127.0.0.1:{port}")
                secs = read_source(own, n, d, while_reading=lambda: sink("mqtt", own, n, d))
                results.append(("mqtt source (QoS 1, while a job publishes)", n / secs))
            finally:
                broker.kill()
                broker.wait()
        if "rabbitmq" in only:
            q = f"bench-{pid}"
            client("rabbitmq_client.py", "purge", q)
            amqp = f"'connector' = 'rabbitmq', 'url' = 'amqp://guest:guest@127.0.0.1:5672/%2f', 'queue' = '{q}', 'format' = 'json'"
            results.append(("rabbitmq sink (confirms)", n / sink("rabbitmq", amqp, n, d)))
            results.append(("rabbitmq source", n / read_source(amqp, n, d)))
            client("rabbitmq_client.py", "purge", q)
        if "nats" in only:
            stream, subject = f"BENCH_{pid}", f"bench.{pid}"
            client("nats_client.py", "stream", stream, subject)
            out = f"'connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'subject' = '{subject}', 'format' = 'json'"
            results.append(("nats sink (JetStream acks)", n / sink("nats", out, n, d)))
            src = f"'connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'stream' = '{stream}', 'format' = 'json'"
            results.append(("nats source (JetStream)", n / read_source(src, n, d)))
        if "postgres-cdc" in only:
            # The snapshot of a table of n rows, then n rows inserted (one transaction) while
            # the job streams; checkpoints every second advance the slot.
            table, slot = f"bench_cdc_{pid}", f"bench_cdc_{pid}"

            def psql(q):
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q",
                                "-c", q], check=True, capture_output=True)
            psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id INT PRIMARY KEY, "
                 "sensor TEXT, temperature DOUBLE PRECISION); "
                 f"ALTER TABLE {table} REPLICA IDENTITY FULL; INSERT INTO {table} SELECT i, "
                 f"'s' || (i % 100), i * 0.5 FROM generate_series(1, {n}) i")
            cdc = (f"'connector' = 'postgres-cdc', 'hostname' = '127.0.0.1', 'username' = 'postgres', "
                   f"'database-name' = 'test', 'schema-name' = 'public', 'table-name' = '{table}', "
                   f"'slot.name' = '{slot}', 'debezium.publication.name' = '{slot}'")
            cols = "(id INT, sensor STRING, temperature DOUBLE, PRIMARY KEY (id) NOT ENFORCED)"
            every = "SET 'execution.checkpointing.interval' = '1 s';\n"
            try:
                results.append(("postgres-cdc snapshot",
                                n / read_source(cdc, n, d, columns=cols, prelude=every)))
                psql(f"TRUNCATE {table}")
                psql(f"SELECT pg_drop_replication_slot('{slot}')")
                secs = read_source(cdc, n, d, columns=cols, prelude=every, while_reading=lambda: psql(
                    f"INSERT INTO {table} SELECT i, 's' || (i % 100), i * 0.5 FROM generate_series(1, {n}) i"))
                results.append(("postgres-cdc changes (pgoutput)", n / secs))
            finally:
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c",
                                f"SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION IF EXISTS "
                                f"{slot}; DROP TABLE {table}"], capture_output=True)
        if "kafka-avro" in only:
            # The same rows to and from a topic in JSON and in Avro with the schema registry.
            port, reg = free_port(), free_port()
            broker = subprocess.Popen([sluice, "broker", "--listen", f"127.0.0.1:{port}",
                                       "--data-dir", os.path.join(d, "broker"),
                                       "--schema-registry", f"127.0.0.1:{reg}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port)
                wait_for_port(reg)
                for fmt, opts in [("json", "'format' = 'json'"),
                                  ("avro-confluent", f"'format' = 'avro-confluent', "
                                   f"'avro-confluent.url' = 'http://127.0.0.1:{reg}'")]:
                    kafka = (f"'connector' = 'kafka', 'topic' = 'bench-{fmt}', "
                             f"'properties.bootstrap.servers' = '127.0.0.1:{port}', {opts}")
                    results.append((f"kafka sink ({fmt})", n / sink("kafka", kafka, n, d)))
                    src = kafka + ", 'scan.startup.mode' = 'earliest-offset'"
                    results.append((f"kafka source ({fmt})", n / read_source(src, n, d)))
            finally:
                broker.kill()
                broker.wait()
        if "s3" in only:
            # Parquet files on the local disk, then as objects on moto's S3 server.
            port = free_port()
            moto = subprocess.Popen([os.path.join(venv, "bin", "moto_server"), "-H", "127.0.0.1",
                                     "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port)
                endpoint = f"http://127.0.0.1:{port}"
                client("s3_objects.py", endpoint, "bench", "create")
                local = f"'connector' = 'filesystem', 'path' = '{d}/lake', 'format' = 'parquet'"
                results.append(("filesystem sink (parquet, local disk)", n / sink("fs", local, n, d)))
                s3 = (f"'connector' = 'filesystem', 'path' = 's3://bench/lake', 'format' = 'parquet', "
                      f"'s3.endpoint' = '{endpoint}', 's3.access-key' = 'test', "
                      f"'s3.secret-key' = 'test', 's3.region' = 'us-east-1', "
                      "'s3.path.style.access' = 'true'")
                results.append(("filesystem sink (parquet, S3 on moto)", n / sink("s3", s3, n, d)))
                cols = COLUMNS
                sql = (f"CREATE TABLE src {cols} WITH ({s3});\n"
                       f"CREATE TABLE bh {cols} WITH ('connector' = 'blackhole');\n"
                       "INSERT INTO bh SELECT * FROM src;\n")
                results.append(("filesystem source (parquet, S3 on moto)", n / run_job(sql, d)))
                sql = sql.replace(s3, local)
                results.append(("filesystem source (parquet, local disk)", n / run_job(sql, d)))
            finally:
                moto.kill()
                moto.wait()
        if "redis" in only:
            sql = GEN.format(n=n) + (
                f"CREATE TABLE r (sensor STRING, temperature DOUBLE, PRIMARY KEY (sensor) NOT ENFORCED) WITH ("
                f"'connector' = 'redis', 'url' = 'redis://127.0.0.1:6379', 'key-prefix' = 'bench-{pid}:');\n"
                "INSERT INTO r SELECT * FROM gen;\n")
            results.append(("redis sink (hashes)", n / run_job(sql, d)))
            subprocess.run(["sh", "-c", f"redis-cli --scan --pattern 'bench-{pid}:*' | xargs -r -n 1000 redis-cli DEL"],
                           capture_output=True)
        if "webhook" in only:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            m = min(n, 20_000)  # one request a row
            hook = f"'connector' = 'webhook', 'url' = '{url}'"
            results.append((f"webhook sink ({m} requests)", m / sink("webhook", hook, m, d)))
            server.shutdown()
    print(f"{n:,} rows of (sensor STRING, temperature DOUBLE), JSON unless named; records per second:")
    for name, rate in results:
        print(f"  {name:45} {rate:12,.0f}")


main()
