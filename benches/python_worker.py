"""The Python baseline of `cargo bench --bench bus`: a plain nats-py worker serving the discount
rule the way a team without mofa-bus would write it (MessagePack in, the rule, MessagePack out),
so the sandboxed plugins are compared with what they replace, measured on the same server in the
same run.

Usage: python_worker.py NATS_URL SUBJECT. Prints "ready" once subscribed; runs until killed.
"""

import asyncio
import sys

import msgpack
import nats


def discount(request):
    if not isinstance(request, dict):
        raise ValueError("input must be a map {price, customer_tier}")
    price = request.get("price")
    if isinstance(price, bool) or not isinstance(price, (int, float)):
        raise ValueError("price must be a number")
    price = float(price)
    if price < 0.0:
        raise ValueError("price must be >= 0")
    tier = request.get("customer_tier")
    if tier == "gold":
        return price * 0.8
    if tier == "silver":
        return price * 0.9
    return price


async def main(url, subject):
    nc = await nats.connect(url)

    async def handle(msg):
        try:
            await msg.respond(msgpack.packb(discount(msgpack.unpackb(msg.data))))
        except ValueError as e:
            body = msgpack.packb({"code": 400, "message": str(e)})
            await nc.publish(msg.reply, body, headers={"Nats-Service-Error-Code": "400"})

    await nc.subscribe(subject, queue="python", cb=handle, pending_msgs_limit=1_000_000)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
