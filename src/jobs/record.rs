//! What the results bucket and `mofa.results.<job-id>` carry about a job, and what a dead
//! letter says: the records both sides of a job read and write.

use serde::{Deserialize, Serialize};

use crate::wire::{ErrorCode, Value};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No attempt has finished yet. Not stored: only workers write the results bucket, and a
    /// job has no record there until its first attempt ends (records of earlier releases may
    /// say it).
    Queued,
    /// An attempt failed with a transient error; the job runs again after its backoff.
    Retrying,
    /// The plugin returned `output`.
    Done,
    /// The job failed for good (a permanent error, or `max_deliver` attempts); it is in the
    /// dead-letter stream at `dead_letter`.
    Failed,
}

impl JobState {
    /// Whether the job will not run again (unless replayed from the dead-letter stream).
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// A job's latest state: the value under its id in the results bucket, and what is published
/// on `mofa.results.<job-id>` when it reaches a final state. MessagePack map; schema in
/// subjects.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job id.
    pub job: String,
    /// The plugin that runs it.
    pub plugin: String,
    /// Where the job is.
    pub state: JobState,
    /// Whether the plugin returned a value (`state` is `done`).
    pub ok: bool,
    /// The plugin's output (`done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Error code of the last attempt (`retrying`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Error message of the last attempt (`retrying`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Deliveries so far (1 for a job that succeeded the first time).
    pub attempts: u64,
    /// The worker of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The bucket revision of the plugin that ran it (plugins distributed over the bus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Sequence in the jobs stream of the submission this state is about (unset for
    /// `queued`): a redelivered job whose own submission is already `done` is not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Sequence of the job in the dead-letter stream (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<u64>,
    /// Unix time in milliseconds of this state.
    pub timestamp_ms: u64,
}

impl JobResult {
    /// The record of a job just submitted.
    pub fn queued(job: &str, plugin: &str) -> Self {
        Self {
            job: job.to_string(),
            plugin: plugin.to_string(),
            state: JobState::Queued,
            ok: false,
            output: None,
            code: None,
            message: None,
            attempts: 0,
            worker: None,
            revision: None,
            sequence: None,
            dead_letter: None,
            timestamp_ms: crate::wire::unix_ms(),
        }
    }

    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))
    }

    /// Encodes the record (named MessagePack map).
    pub fn encode(&self) -> Result<bytes::Bytes, String> {
        crate::wire::encode_named(self).map_err(|e| e.to_string())
    }
}

/// Whether an attempt that failed with `code` is worth repeating: a deadline, a saturated or
/// unavailable plugin, a failure inside the plugin (its dependencies may recover). Bad input
/// (400) and a tripped size or operation limit (413) fail the same way every time, so such a
/// job goes to the dead-letter stream at once.
pub fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Internal
    )
}

/// A job in the dead-letter stream, as `mofa dlq` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Sequence in the dead-letter stream (what `mofa dlq --replay` takes).
    pub sequence: u64,
    /// The plugin.
    pub plugin: String,
    /// The job id.
    pub job: String,
    /// Error code of the last attempt.
    pub code: u16,
    /// Error message of the last attempt.
    pub error: String,
    /// Deliveries made.
    pub attempts: u64,
    /// The worker that gave up.
    pub worker: String,
    /// The job's input as submitted.
    pub input: Value,
    /// Unix time in milliseconds when it was dead-lettered.
    pub timestamp_ms: u64,
}
