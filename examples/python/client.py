"""A mofa-bus client in Python (nats-py + msgpack).

Calls the `discount` plugin, reads an error reply from the NATS Services error headers, shows
what "no worker serves this plugin" looks like, then follows hot-reload events. Every line it
prints is one JSON object, so scripts (and the project's tests) can read it.

    pip install nats-py msgpack
    python client.py [--nats nats://127.0.0.1:4222] [--follow N]
"""

import argparse
import asyncio
import json
import sys
import time

import msgpack
import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def call(nc, plugin, value, timeout=5.0):
    """One request to mofa.exec.<plugin>: (output, None) or (None, {code, message}).

    Mofa-Deadline (Unix ms) tells the worker how long this caller waits: a request queues no
    longer than that, and is not run once the caller has given up."""
    deadline = str(int((time.time() + timeout) * 1000))
    reply = await nc.request(
        f"mofa.exec.{plugin}",
        msgpack.packb(value),
        timeout=timeout,
        headers={"Mofa-Deadline": deadline},
    )
    headers = reply.headers or {}
    code = headers.get("Nats-Service-Error-Code")
    if code is None:
        return msgpack.unpackb(reply.data), None
    body = msgpack.unpackb(reply.data)  # {code, message}, the same as the headers
    return None, {
        "code": int(code),
        "message": headers.get("Nats-Service-Error", ""),
        "body": body,
        "revision": headers.get("Mofa-Revision"),
    }


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--follow", type=int, default=0, help="reload events to wait for")
    args = parser.parse_args()
    nc = await nats.connect(args.nats)

    for value in (
        {"price": 100, "customer_tier": "gold"},
        {"price": "ten", "customer_tier": "gold"},
    ):
        output, error = await call(nc, "discount", value)
        if error is None:
            emit(call="discount", input=value, output=output)
        else:
            emit(call="discount", input=value, error=error)

    try:
        await call(nc, "no_such_plugin", None, timeout=2.0)
    except NoRespondersError:
        emit(call="no_such_plugin", error="no responders: no worker serves this plugin")
    except NatsTimeout:
        emit(call="no_such_plugin", error="timeout")

    if args.follow > 0:
        events = await nc.subscribe("mofa.events.reload.>")
        await nc.flush()
        emit(following="mofa.events.reload.>")
        for _ in range(args.follow):
            msg = await events.next_msg(timeout=30)
            emit(subject=msg.subject, event=msgpack.unpackb(msg.data))
    await nc.drain()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # a one-line reason for the shell, not a traceback
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(1)
