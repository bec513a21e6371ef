"""Reads a whole topic from the start with confluent-kafka and prints
"<partition> <offset> <value>" per message. Stops at the end of every partition.

    python consume_all.py BOOTSTRAP TOPIC
"""
import sys

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": True})
md = c.list_topics(topic, timeout=10)
parts = list(md.topics[topic].partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
done = set()
while len(done) < len(parts):
    m = c.poll(5)
    if m is None:
        break
    if m.error():
        if m.error().code() == -191:  # _PARTITION_EOF
            done.add(m.partition())
            continue
        raise SystemExit(str(m.error()))
    print(m.partition(), m.offset(), m.value().decode())
c.close()
