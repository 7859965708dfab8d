"""The Python side of `cargo bench --bench compare`: the three operations written the way a
team without mofa-bus would write them, timed in-process (CPython, no bus) and served over the
bus by a plain nats-py worker, so the native, Rhai and WASM plugins are compared with what they
replace, in the same run.

Operations (every one takes {"text": str}; the Rust, Rhai and WASM versions match them):
  json   parse the order document in text; {"items": n, "total": sum(qty * price)}
  regex  {"matched": bool}: whether text contains an e-mail address
  rules  the content-moderation rule set of plugins/rules/content_moderation.rhai

Usage:
  ops.py inprocess WORDS_JSON INPUTS_JSON   prints one JSON line {op: {"ns": per call, "output": ...}}
  ops.py serve URL PREFIX WORDS_JSON        serves PREFIX.<op>; prints "ready" once subscribed
WORDS_JSON is the profanity word list (a JSON array), the worker's default `rhai.profanity`.
"""

import asyncio
import json
import re
import sys
import time

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Words as the worker's has_profanity() splits them: runs of letters, digits and apostrophes.
WORD_SEPARATOR = re.compile(r"[^\w']|_")
SPAM = ("free", "winner", "click here", "limited offer")


def json_op(request):
    order = json.loads(request["text"])
    items = order["items"]
    total = 0.0
    for item in items:
        total += item["qty"] * item["price"]
    return {"items": len(items), "total": total}


def regex_op(request):
    return {"matched": EMAIL.search(request["text"]) is not None}


def rules_op(words):
    def verdict(rule, action, reason):
        return {"action": action, "reason": reason, "rule": rule, "matched": True}

    def moderate(request):
        text = request["text"]
        if any(w.lower() in words for w in WORD_SEPARATOR.split(text) if w):
            return verdict("block_profanity", "block", "profanity")
        lower = text.lower()
        if ("http://" in lower or "https://" in lower) and any(s in lower for s in SPAM):
            return verdict("flag_spam_link", "flag", "link with spam words")
        if len(text) >= 12 and text == text.upper():
            return verdict("review_shouting", "review", "all capitals")
        if len(text) > 2000:
            return verdict("review_long", "review", "longer than 2000 characters")
        return {"rule": None, "matched": False}

    return moderate


def operations(words):
    return {"json": json_op, "regex": regex_op, "rules": rules_op(frozenset(words))}


def per_call_ns(fn, request, budget_s=0.5):
    """Nanoseconds per call: calls in batches until the budget is spent (timeit's approach)."""
    for _ in range(1000):
        fn(request)
    calls, start = 0, time.perf_counter_ns()
    while True:
        for _ in range(1000):
            fn(request)
        calls += 1000
        elapsed = time.perf_counter_ns() - start
        if elapsed >= budget_s * 1e9:
            return elapsed / calls


def inprocess(words, inputs):
    ops = operations(words)
    out = {}
    for op, request in inputs.items():
        out[op] = {"ns": per_call_ns(ops[op], request), "output": ops[op](request)}
    print(json.dumps(out), flush=True)


async def serve(url, prefix, words):
    import msgpack
    import nats

    nc = await nats.connect(url)

    def handler(fn):
        async def handle(msg):
            try:
                await msg.respond(msgpack.packb(fn(msgpack.unpackb(msg.data))))
            except Exception as e:  # a bad request is answered, never dropped
                body = msgpack.packb({"code": 400, "message": str(e)})
                await nc.publish(msg.reply, body, headers={"Nats-Service-Error-Code": "400"})

        return handle

    for op, fn in operations(words).items():
        await nc.subscribe(f"{prefix}.{op}", queue="python", cb=handler(fn),
                           pending_msgs_limit=1_000_000)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "inprocess":
        inprocess(json.loads(sys.argv[2]), json.loads(sys.argv[3]))
    elif sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
    else:
        sys.exit(__doc__)
