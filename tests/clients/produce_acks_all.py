"""Produces numbered messages with acks=all and prints "ACK <n>" for each one the broker
acknowledged, as soon as it is acknowledged. Used by the crash test, which kills the
broker while this runs.

    python produce_acks_all.py BOOTSTRAP TOPIC FIRST COUNT
"""
import sys

from confluent_kafka import Producer

bootstrap, topic, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": False,
    "linger.ms": 2,
    "message.timeout.ms": 60000,
    "retry.backoff.ms": 50,
    # One request at a time, so that the client never reorders its own retries.
    "max.in.flight.requests.per.connection": 1,
})


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
