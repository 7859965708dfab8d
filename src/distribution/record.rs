//! The value stored under each key of the plugins bucket.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plugin::PluginKind;

/// Modules larger than this go to the Object Store; the record then carries a pointer.
pub const INLINE_LIMIT: usize = 512 * 1024;

/// One revision of a plugin, as published (MessagePack map; schema in subjects.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The kind of code: `rhai` or `wasm` (see [`crate::kinds`]).
    pub kind: PluginKind,
    /// Script text (rhai).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Module bytes (wasm, when small enough to carry inline).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub module: Option<Vec<u8>>,
    /// Object Store name of the module (wasm, when too large to carry inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The text of the code's sidecar file: a module's manifest, TOML (wasm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// SHA-256 of the code (script text or module bytes), hex.
    pub sha256: String,
    /// A version label.
    pub version: String,
    /// Who published it (`user@host`).
    pub publisher: String,
    /// When, in Unix milliseconds.
    pub published_ms: u64,
    /// Set when this revision republishes an earlier one (`mofa rollback`): that revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// The nkey public key that signed the record (see [`super::signature`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signature, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Set on a canary revision: it serves a share of the requests beside a stable revision
    /// (`mofa publish --canary`) until it is promoted or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// What the publisher's test cases said before it was published (`mofa publish` runs the
    /// plugin's `.test.toml` cases first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsRun>,
    /// Set when this revision was copied from another environment (`mofa promote --from`):
    /// `ENV@REVISION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
}

/// How a canary revision shares the traffic with the stable one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// Share of the requests the canary answers, in percent (more than 0, at most 100).
    /// A request with a `Mofa-Route-Key` header is placed by a hash of that key, so one key
    /// always sees one variant; other requests are placed at random.
    pub percent: f64,
    /// The bucket revision of the same key that answers the other requests.
    pub stable: u64,
    /// Automatic rollback: a worker stops routing to the canary once its error rate (error
    /// replies / requests answered by the canary on that worker) exceeds this fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Requests the canary must have answered on a worker before `max_error_rate` applies.
    #[serde(default)]
    pub min_requests: u64,
}

impl Eq for Canary {}

impl Canary {
    /// Checks the numbers a publisher chose.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            return Err(format!(
                "canary percent is {}: give a share of the requests above 0 and at most 100",
                self.percent
            ));
        }
        if let Some(rate) = self.max_error_rate {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!(
                    "canary max error rate is {rate}: give a fraction from 0 (any error) to below 1"
                ));
            }
        }
        Ok(())
    }
}

/// The test cases run before a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestsRun {
    /// Cases that passed (all of them, or the publish is refused).
    pub passed: u32,
    /// Published with `--no-test`: the cases were not run.
    #[serde(default)]
    pub skipped: bool,
}

impl PluginRecord {
    /// Decodes a bucket value.
    pub fn decode(bytes: &[u8]) -> Result<PluginRecord, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("not a plugin record: {e}"))
    }

    /// Encodes for the bucket.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(self).map_err(|e| e.to_string())
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Which revision a worker serves for a plugin distributed over the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The bucket revision (sequence) of the record.
    pub number: u64,
    /// SHA-256 of the code.
    pub sha256: String,
    /// The record's version label.
    pub version: String,
}
