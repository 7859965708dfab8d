// A mofa-bus client in JavaScript (Node.js, the `nats` and `@msgpack/msgpack` packages).
//
// Calls the `discount` plugin, reads an error reply from the NATS Services error headers, shows
// what "no worker serves this plugin" looks like, then follows hot-reload events. Every line it
// prints is one JSON object, so scripts (and the project's tests) can read it.
//
//     npm ci
//     node client.mjs [--nats nats://127.0.0.1:4222] [--follow N]

import { parseArgs } from "node:util";
import { connect, ErrorCode, headers } from "nats";
import { decode, encode } from "@msgpack/msgpack";

const { values: args } = parseArgs({
  options: {
    nats: { type: "string", default: "nats://127.0.0.1:4222" },
    follow: { type: "string", default: "0" },
  },
});

const emit = (fields) => console.log(JSON.stringify(fields));

// One request to mofa.exec.<plugin>: {output} or {error: {code, message, body, revision}}.
// Mofa-Deadline (Unix ms) tells the worker how long this caller waits: a request queues no
// longer than that, and is not run once the caller has given up.
async function call(nc, plugin, value, timeout = 5000) {
  const h = headers();
  h.set("Mofa-Deadline", String(Date.now() + timeout));
  const reply = await nc.request(`mofa.exec.${plugin}`, encode(value), { timeout, headers: h });
  const code = reply.headers?.get("Nats-Service-Error-Code");
  if (!code) return { output: decode(reply.data) };
  return {
    error: {
      code: Number(code),
      message: reply.headers.get("Nats-Service-Error"),
      body: decode(reply.data), // {code, message}, the same as the headers
      revision: reply.headers.get("Mofa-Revision") || null,
    },
  };
}

const nc = await connect({ servers: args.nats });

for (const input of [
  { price: 100, customer_tier: "gold" },
  { price: "ten", customer_tier: "gold" },
]) {
  emit({ call: "discount", input, ...(await call(nc, "discount", input)) });
}

try {
  await call(nc, "no_such_plugin", null, 2000);
} catch (e) {
  const why = e.code === ErrorCode.NoResponders ? "no responders: no worker serves this plugin" : String(e);
  emit({ call: "no_such_plugin", error: why });
}

const follow = Number(args.follow);
if (follow > 0) {
  const events = nc.subscribe("mofa.events.reload.>", { max: follow });
  await nc.flush();
  emit({ following: "mofa.events.reload.>" });
  const timer = setTimeout(() => {
    console.error("error: no reload event within 30 s");
    process.exit(1);
  }, 30000);
  for await (const msg of events) {
    emit({ subject: msg.subject, event: decode(msg.data) });
  }
  clearTimeout(timer);
}
await nc.drain();
