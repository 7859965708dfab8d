//! mofa-bus: a plugin-execution service on NATS.
//!
//! A worker connects to NATS and serves every plugin on its own subject `mofa.exec.<plugin>`
//! in the queue group `mofa`, so workers scale horizontally and any one of them can die.
//! Requests and replies are MessagePack.
//!
//! The layers, each depending only on the ones below it:
//! - [`worker`]: the NATS side: one subscription per plugin, admission (a per-plugin concurrency
//!   permit; when none is free the request waits in the plugin's bounded queue, and a full queue
//!   or a wait that runs out is answered 503), replies, result events, the
//!   NATS Services API (`$SRV.PING/INFO/STATS`), hot reload from the plugins bucket, and drain on
//!   SIGTERM.
//! - [`jobs`]: durable jobs on JetStream (`mofa.jobs.<plugin>`): the streams, the results
//!   bucket, submitting, waiting and dead letters. (The worker's consuming side is
//!   `worker::jobs`.)
//! - [`distribution`]: the publishing side of hot reload over JetStream: plugin records,
//!   publishing, rollback, reload events. (The worker's side, following
//!   the bucket, is `worker::follower`.)
//! - [`kinds`]: the table of plugin kinds that arrive as code (Rhai, WASM): files, records,
//!   how each is built and where it runs.
//! - [`plugin`]: the plugin model: the [`plugin::AgentPlugin`] trait, metadata, the lifecycle
//!   state machine, the [`plugin::PluginManager`] and the sandbox thread pool.
//! - [`native`], [`rhai`] and [`wasm`]: the plugin kinds: Rust compiled in (among them
//!   `database`, SQL over sqlx), sandboxed Rhai scripts, and WebAssembly modules in wasmtime.
//! - [`wire`] and [`subjects`]: the wire format and subject names, the public contract
//!   described in `subjects.md`.
//!
//! How a request flows: NATS message on `mofa.exec.discount` → that plugin's subscription →
//! admission permit → native: decode, `execute` inline, encode, reply, result event on
//! `mofa.events.result.discount`; Rhai and WASM: the same steps under the plugin's deadline,
//! inline too while the plugin's calls are short (each bounded, and run again from the start
//! on a sandbox thread if it must act or runs long: see [`plugin::InlineGate`]), otherwise on a
//! sandbox thread.
//!
//! Beside the layers, for running it anywhere: [`nats_server`] finds (or installs once) a
//! nats-server new enough for hot reload, and [`pyvenv`] is the cached-venv installer it uses.
//! [`local`] builds and runs plugin files with no bus at all (`mofa run`, `mofa test` and the
//! check `mofa publish` makes first). On the client side, [`fleet`] asks the workers what they
//! serve. What only the `mofa` command line uses (the `--dev` server, the MCP server, the
//! canary comparison, the directory watcher) lives with it, in the binary's `cmd/`.

pub mod config;
pub mod connection;
pub mod distribution;
pub mod fleet;
pub mod jobs;
pub mod kinds;
pub mod local;
pub mod native;
pub mod nats_server;
pub mod plugin;
pub mod pyvenv;
pub mod rhai;
pub mod subjects;
pub mod telemetry;
pub mod wasm;
pub mod wire;
pub mod worker;
