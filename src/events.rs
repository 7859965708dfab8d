//! The events workers publish, for monitors: a result event on `mofa.events.result.<plugin>`
//! after every execution, and reload events on `mofa.events.reload.<plugin>` as a revision
//! arrives, serves, fails or is rolled back. Both are MessagePack maps (schemas in
//! subjects.md); the worker publishes them from one place, `worker::events`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::wire::Value;

/// A result event, published on `mofa.events.result.<plugin>` after every execution. The
/// names borrow where they can, so publishing one allocates little; decoded events own them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultEvent<'a> {
    /// Always `"result"`, so a subscriber to `mofa.events.>` can tell event kinds apart.
    pub event: Cow<'a, str>,
    /// Plugin name.
    pub plugin: Cow<'a, str>,
    /// Plugin kind: `native`, `rhai` or `wasm`.
    pub kind: Cow<'a, str>,
    /// Bucket revision that executed it (plugins distributed over the bus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Set when a canary revision executed it (see `mofa publish --canary`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// Id of the worker that executed the request.
    pub worker: Cow<'a, str>,
    /// The caller's `Mofa-Request-Id` header, or an id the worker generated.
    pub request_id: String,
    /// The W3C trace id (32 hex digits) of the request's trace: its span's when the worker
    /// traces, else the caller's `traceparent`'s; absent when neither exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Whether the plugin returned a value.
    pub ok: bool,
    /// Error code when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Error message when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Execution time in microseconds (decode, execute, encode).
    pub duration_us: u64,
    /// Unix time in milliseconds when the execution finished.
    pub timestamp_ms: u64,
    /// The output, unless the worker is configured not to include it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

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
