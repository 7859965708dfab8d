"""Sends one request with a W3C traceparent, as any traced NATS client would, using nats-py.

Usage: python traced_request.py NATS_URL PLUGIN JSON_INPUT TRACEPARENT
Prints {"reply": ..., "headers": {...}} as one JSON line.
"""

import asyncio
import json
import sys

import msgpack
import nats


async def main(url, plugin, text, traceparent):
    nc = await nats.connect(url)
    reply = await nc.request(
        "mofa.exec." + plugin,
        msgpack.packb(json.loads(text)),
        timeout=10,
        headers={"traceparent": traceparent},
    )
    print(json.dumps({
        "reply": msgpack.unpackb(reply.data),
        "headers": dict(reply.headers or {}),
    }))
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
