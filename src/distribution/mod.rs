//! Distribution of scripts and modules over the bus, and hot reload.
//!
//! The source of truth is the JetStream Key-Value bucket `mofa_plugins`: one key per plugin,
//! whose value is a [`PluginRecord`] (kind, source or module, SHA-256, version, publisher,
//! time), with history for rollback. Modules too large for a KV value go to the Object Store
//! bucket `mofa_modules`, named by their SHA-256, with a pointer in the record. Workers read
//! every current value at start and then follow updates (see `worker::follower`); this module
//! holds the record format, the publishing side ([`Distribution`]: publish, rollback,
//! remove, history) and the reload events.

mod config;
mod record;
pub mod signature;
mod store;

pub use crate::events::{ReloadEvent, ReloadStatus};
pub use config::{validate_env, InvalidEnv, ReloadConfig};
pub use record::{Canary, PluginRecord, Revision, TestsRun, INLINE_LIMIT};
pub use store::{Distribution, DistributionError, Stored};
