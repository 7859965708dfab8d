//! The verbs, one file per group; `main.rs` parses the command line and hands each verb's
//! `Args` to its `run` here.
//!
//! - `worker`: `mofa worker` (and `--dev`, whose server is `dev`), `mofa sql`;
//! - `connect`: the connection flags every verb shares, and connecting;
//! - `setup`: `mofa setup`, the admin step that makes the streams and buckets;
//! - `exec`: `mofa exec`;
//! - `jobs`: `submit`, `job`, `dlq`;
//! - `local`: plugin files run locally (`run`, `test`) and the build check before a publish;
//! - `rollout`: `publish`, `promote`, `canary` (comparing revisions in `revisions`), `keygen`;
//! - `watch`: `mofa watch`;
//! - `bucket`: `history`, `rollback`, `remove`;
//! - `fleet`: `plugins`, `stats`, `tools`, `ping`;
//! - `events`: `mofa events`; `mcp`: `mofa mcp`, the fleet's tools over MCP.

pub(crate) mod bucket;
pub(crate) mod connect;
pub(crate) mod dev;
pub(crate) mod events;
pub(crate) mod exec;
pub(crate) mod fleet;
pub(crate) mod jobs;
pub(crate) mod local;
pub(crate) mod mcp;
pub(crate) mod revisions;
pub(crate) mod rollout;
pub(crate) mod setup;
pub(crate) mod watch;
pub(crate) mod worker;
