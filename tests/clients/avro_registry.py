"""confluent-kafka's Avro serializer and deserializer, with its schema registry client, against
`sluice broker --schema-registry` and Sluice's avro-confluent format.

Usage: avro_registry.py BOOTSTRAP REGISTRY_URL PHASE
  produce      registers a producer's schema through AvroSerializer and writes orders
  registry     checks the registry's REST API with the client: subjects, versions, ids,
               lookups, compatibility levels and checks, deletes
  consume      reads TOPIC (argv[4]) with AvroDeserializer and prints each value as JSON
"""

import json
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, url, phase = sys.argv[1], sys.argv[2], sys.argv[3]
registry = SchemaRegistryClient({"url": url})

# A producer's own schema: its own record name and namespace, an `int` where the table has
# BIGINT, a field the table does not read.
ORDER = json.dumps({
    "type": "record", "name": "Order", "namespace": "com.example.shop",
    "fields": [
        {"name": "order_id", "type": "int"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "warehouse", "type": "string", "default": "main"},
    ],
})

ORDERS = [
    {"order_id": 1, "customer": "alice", "amount": 12.5, "note": None, "warehouse": "w1"},
    {"order_id": 2, "customer": "bob", "amount": 3.0, "note": "small", "warehouse": "w1"},
    {"order_id": 3, "customer": "carol", "amount": 99.25, "note": "gift wrap", "warehouse": "w2"},
    {"order_id": 4, "customer": "dave", "amount": 40.0, "note": None, "warehouse": "w2"},
    {"order_id": 5, "customer": "émile", "amount": 10.01, "note": "ünïcödé", "warehouse": "w3"},
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


def produce():
    ser = AvroSerializer(registry, ORDER)
    p = Producer({"bootstrap.servers": bootstrap})
    for o in ORDERS:
        value = ser(o, SerializationContext("orders", MessageField.VALUE))
        check(value[0] == 0, "Confluent's wire format starts with a zero byte")
        p.produce("orders", value=value, key=str(o["order_id"]).encode())
    check(p.flush(30) == 0, "all orders delivered")
    latest = registry.get_latest_version("orders-value")
    check(latest.version == 1, f"orders-value has version 1, got {latest.version}")
    print(f"produced {len(ORDERS)} orders with schema id {latest.schema_id}")


def registry_api():
    s1 = Schema(json.dumps({"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}), "AVRO")
    s2 = Schema(json.dumps({"type": "record", "name": "r", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": ""}]}), "AVRO")
    bad = Schema(json.dumps({"type": "record", "name": "r", "fields": [{"name": "c", "type": "int"}]}), "AVRO")
    id1 = registry.register_schema("api-test", s1)
    check(registry.register_schema("api-test", s1) == id1, "registering twice gives the same id")
    check(registry.register_schema("api-other", s1) == id1, "the same schema has the same id in another subject")
    id2 = registry.register_schema("api-test", s2)
    check(id2 != id1, "a new schema gets a new id")
    check(registry.get_versions("api-test") == [1, 2], "versions 1 and 2")
    check(json.loads(registry.get_schema(id1).schema_str) == json.loads(s1.schema_str), "schema by id")
    v = registry.get_version("api-test", 2)
    check((v.schema_id, v.version, v.subject) == (id2, 2, "api-test"), f"version 2: {v}")
    found = registry.lookup_schema("api-test", s1)
    check((found.schema_id, found.version) == (id1, 1), "lookup finds version 1")
    check("api-test" in registry.get_subjects(), "subjects list api-test")
    check(registry.get_compatibility() == "BACKWARD", "the default level is BACKWARD")
    check(not registry.test_compatibility("api-test", bad), "an incompatible schema is reported")
    check(registry.test_compatibility("api-test", s2), "a compatible schema is reported")
    try:
        registry.register_schema("api-test", bad)
        check(False, "an incompatible schema is refused")
    except SchemaRegistryError as e:
        check(e.http_status_code == 409, f"409 for an incompatible schema, got {e.http_status_code}")
    try:
        registry.register_schema("api-test", Schema('{"type": "record", "name": "x", "fields": [{"name": "y", "type": "nope"}]}', "AVRO"))
        check(False, "an invalid schema is refused")
    except SchemaRegistryError as e:
        check(e.error_code == 42201, f"42201 for an invalid schema, got {e.error_code}")
    registry.set_compatibility("api-test", "NONE")
    check(registry.get_compatibility("api-test") == "NONE", "the subject's level is NONE")
    check(registry.register_schema("api-test", bad) not in (id1, id2), "with NONE anything goes")
    try:
        registry.get_version("api-test", 9)
        check(False, "version 9 does not exist")
    except SchemaRegistryError as e:
        check(e.error_code == 40402, f"40402 for a missing version, got {e.error_code}")
    check(registry.delete_subject("api-other") == [1], "soft delete returns the versions")
    check("api-other" not in registry.get_subjects(), "a deleted subject is not listed")
    check(registry.delete_subject("api-other", permanent=True) == [1], "permanent delete")
    try:
        registry.get_schema(9999)
        check(False, "schema 9999 does not exist")
    except SchemaRegistryError as e:
        check(e.error_code == 40403, f"40403 for a missing schema, got {e.error_code}")
    print("registry checks passed")


def consume(topic):
    deser = AvroDeserializer(registry)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "avro-check",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    rows, empty = [], 0
    while empty < 5:
        m = c.poll(1.0)
        if m is None:
            empty += 1
            continue
        check(m.error() is None, f"consume error {m.error()}")
        empty = 0
        row = deser(m.value(), SerializationContext(topic, MessageField.VALUE))
        if m.key() is not None:
            row["key"] = deser(m.key(), SerializationContext(topic, MessageField.KEY))
        rows.append(row)
    c.close()
    for r in rows:
        print(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str))
    for subject in registry.get_subjects():
        if subject.startswith(topic + "-"):
            print(f"schema {subject} " + registry.get_latest_version(subject).schema.schema_str)


if phase == "produce":
    produce()
elif phase == "registry":
    registry_api()
elif phase == "consume":
    consume(sys.argv[4])
else:
    sys.exit(f"unknown phase {phase}")
