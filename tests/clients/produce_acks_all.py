"""Produces numbered messages with acks=all and prints "ACK <n>" for each one the broker
acknowledged, as soon as it is acknowledged. Used by the crash test, which kills the
broker while this runs.

    python produce_acks_all.py BOOTSTRAP TOPIC FIRST COUNT [idempotent]

With "idempotent", the producer is idempotent (enable.idempotence, five requests in
flight): it may be left running across a broker restart, and must store nothing twice.
"""
import sys

from confluent_kafka import Producer

bootstrap, topic, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
idempotent = len(sys.argv) > 5 and sys.argv[5] == "idempotent"
config = {
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "linger.ms": 2,
    "message.timeout.ms": 60000,
    "retry.backoff.ms": 50,
}
if idempotent:
    config.update({"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
else:
    # One request at a time, so that the client never reorders its own retries.
    config.update({"enable.idempotence": False, "max.in.flight.requests.per.connection": 1})
p = Producer(config)


def delivered(err, msg):
    if err is None:
        sys.stdout.write(f"ACK {msg.value().decode()}\n")
        sys.stdout.flush()


for i in range(first, first + count):
    while True:
        try:
            p.produce(topic, value=str(i).encode(), on_delivery=delivered)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
p.flush(60)
