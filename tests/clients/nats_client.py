"""NATS's own Python client (nats-py) for the nats connector's tests, against JetStream.

    nats_client.py stream NAME SUBJECT   # (re)creates the stream NAME over SUBJECT
    nats_client.py publish SUBJECT       # each line of stdin, acknowledged by the stream
    nats_client.py read NAME             # every message of the stream, one a line
"""
import asyncio
import sys

import nats
from nats.js.api import StreamConfig


async def main():
    cmd = sys.argv[1]
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    if cmd == "stream":
        name, subject = sys.argv[2], sys.argv[3]
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass
        await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    elif cmd == "publish":
        for line in sys.stdin.read().splitlines():
            await js.publish(sys.argv[2], line.encode())
    elif cmd == "read":
        info = await js.stream_info(sys.argv[2])
        if info.state.messages == 0:
            return await nc.close()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(sys.argv[2], seq)
            print(msg.data.decode())
    await nc.close()


asyncio.run(main())
