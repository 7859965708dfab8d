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
