//! The value stored under each key of the plugins bucket.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Modules larger than this go to the Object Store; the record then carries a pointer.
pub const INLINE_LIMIT: usize = 512 * 1024;

/// What kind of code a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A Rhai script (`source`).
    Rhai,
    /// A WebAssembly module (`module`, or `object` in the Object Store) with an optional
    /// `manifest`.
    Wasm,
}

impl RecordKind {
    /// `rhai` or `wasm`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Rhai => "rhai",
            RecordKind::Wasm => "wasm",
        }
    }
}

/// One revision of a plugin, as published (MessagePack map; schema in subjects.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// `rhai` or `wasm`.
    pub kind: RecordKind,
    /// Script text (rhai).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Module bytes (wasm, when small enough to carry inline).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub module: Option<Vec<u8>>,
    /// Object Store name of the module (wasm, when too large to carry inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The module's manifest, TOML text (wasm).
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
