"""RabbitMQ's own Python client (pika) for the rabbitmq connector's tests.

    rabbitmq_client.py publish QUEUE        # each line of stdin, a persistent message
    rabbitmq_client.py drain QUEUE N SECS   # up to N messages (acknowledged), one a line
    rabbitmq_client.py purge QUEUE          # declares the durable queue and empties it
"""
import sys
import time

import pika

URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


def channel(queue):
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    return conn, ch


def main():
    cmd, queue = sys.argv[1], sys.argv[2]
    conn, ch = channel(queue)
    if cmd == "publish":
        ch.confirm_delivery()
        for line in sys.stdin.read().splitlines():
            ch.basic_publish(
                exchange="",
                routing_key=queue,
                body=line.encode(),
                properties=pika.BasicProperties(delivery_mode=2),
            )
    elif cmd == "drain":
        want, deadline = int(sys.argv[3]), time.time() + float(sys.argv[4])
        got = 0
        while got < want and time.time() < deadline:
            method, _, body = ch.basic_get(queue=queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            print(body.decode())
            got += 1
    elif cmd == "purge":
        ch.queue_purge(queue=queue)
    conn.close()


main()
