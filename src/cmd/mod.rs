//! The verbs, one file per group; `main.rs` parses the command line and hands each verb here.
//!
//! - `worker`: `mofa worker` (and `--dev`), `mofa sql`;
//! - `connect`: the connection flags every verb shares, and connecting;
//! - `local`: plugin files run locally (`run`, `test`) and the build check before a publish;
//! - `rollout`: `publish`, `promote`, `canary`;
//! - `watch`: `mofa watch`;
//! - `bucket`: `history`, `rollback`, `remove`;
//! - `fleet`: `plugins`, `stats`, `tools`, `ping`.

pub(crate) mod bucket;
pub(crate) mod connect;
pub(crate) mod fleet;
pub(crate) mod local;
pub(crate) mod rollout;
pub(crate) mod watch;
pub(crate) mod worker;
