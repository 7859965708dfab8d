//! Reload events, published on `mofa.events.reload.<plugin>`.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadStatus {
    /// A new revision arrived and is being compiled and loaded.
    Started,
    /// The new revision serves.
    Completed,
    /// The new revision was rejected (compile or load error); see `error`.
    Failed,
    /// After a failure, the previous revision (`revision`) keeps serving.
    RolledBack,
    /// The plugin's key was deleted: its endpoint is gone from this worker.
    Removed,
}

/// A reload event (MessagePack map; schema in subjects.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadEvent {
    /// Always `"reload"`.
    pub event: String,
    /// What happened.
    pub status: ReloadStatus,
    /// Plugin name.
    pub plugin: String,
    /// Worker id.
    pub worker: String,
    /// The revision the event is about (for `rolled_back`: the one that keeps serving).
    pub revision: u64,
    /// SHA-256 of that revision's code.
    pub sha256: String,
    /// Plugin kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Version label, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Compile + load time in microseconds (`completed`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Why (`failed`; `rolled_back` when a canary was dropped for its error rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A canary: `completed` for a canary revision names the stable revision it serves beside;
    /// `rolled_back` for a dropped canary names the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_of: Option<u64>,
    /// Unix time in milliseconds.
    pub timestamp_ms: u64,
}

impl ReloadEvent {
    /// An event of `status` about `revision` of `plugin` on `worker`, stamped now.
    pub fn new(status: ReloadStatus, plugin: &str, worker: &str, revision: u64) -> Self {
        Self {
            event: "reload".to_string(),
            status,
            plugin: plugin.to_string(),
            worker: worker.to_string(),
            revision,
            sha256: String::new(),
            kind: None,
            version: None,
            duration_us: None,
            error: None,
            canary_of: None,
            timestamp_ms: crate::wire::unix_ms(),
        }
    }
}
