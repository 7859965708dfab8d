//! mofa-bus: a plugin-execution service on NATS.
//!
//! A worker connects to NATS and serves every plugin on its own subject `mofa.exec.<plugin>`
//! in the queue group `mofa`, so workers scale horizontally and any one of them can die.
//! Requests and replies are MessagePack.
//!
//! The layers, each depending only on the ones below it:
//! - [`worker`]: the NATS side: one subscription per plugin, admission (a per-plugin concurrency
//!   permit; when none is free the request is answered 503 at once), replies, result events, the
//!   NATS Services API (`$SRV.PING/INFO/STATS`) and drain on SIGTERM.
//! - [`plugin`]: the plugin model: the [`plugin::AgentPlugin`] trait, metadata, the lifecycle
//!   state machine and the [`plugin::PluginManager`].
//! - [`native`] and [`rhai`]: the plugin kinds: Rust compiled in, and sandboxed Rhai scripts.
//! - [`wire`] and [`subjects`]: the wire format and subject names, the public contract
//!   described in `subjects.md`.
//!
//! How a request flows: NATS message on `mofa.exec.discount` → that plugin's subscription →
//! admission permit → decode MessagePack → `execute` (native inline; Rhai on a blocking thread
//! under a deadline) → encode → reply → result event on `mofa.events.result.discount`.

pub mod config;
pub mod native;
pub mod plugin;
pub mod reload;
pub mod rhai;
pub mod subjects;
pub mod wasm;
pub mod wire;
pub mod worker;
