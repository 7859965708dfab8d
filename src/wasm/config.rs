//! WASM limits: worker-wide defaults (`[wasm]` in the worker config) and the per-plugin
//! manifest (`plugins/<name>.toml`) that sets a module's limits, capabilities and config.
//!
//! ```toml
//! # plugins/wordcount.toml
//! capabilities = ["log", "get_config"]
//!
//! [limits]
//! max_memory_mb = 16
//! fuel = 50000000
//! timeout_ms = 500
//!
//! [config]
//! top = 3
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A host function a manifest can grant. The import name is the capability name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `mofa::log(level: i32, ptr: i32, len: i32)`: write to the worker's log.
    Log,
    /// `mofa::now() -> i64`: Unix time in milliseconds.
    Now,
    /// `mofa::get_config(key_ptr: i32, key_len: i32) -> i64`: a value from the manifest's
    /// `[config]` table, as MessagePack.
    GetConfig,
    /// `mofa::call_plugin(name_ptr, name_len, in_ptr, in_len) -> i64`: call another plugin.
    CallPlugin,
    /// `mofa::matches(pattern_ptr, pattern_len, text_ptr, text_len) -> i64`: whether a regular
    /// expression (Rust `regex` syntax) matches somewhere in the text: 1 or 0, or an error body
    /// (413 over `wasm.max_regex_bytes`, 400 for an invalid pattern). Compiled once per sandbox
    /// thread and cached by the host, so a fresh instance does not recompile it.
    Matches,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Log,
        Capability::Now,
        Capability::GetConfig,
        Capability::CallPlugin,
        Capability::Matches,
    ];

    /// The capability's name, which is also its import name in module `mofa`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Now => "now",
            Capability::GetConfig => "get_config",
            Capability::CallPlugin => "call_plugin",
            Capability::Matches => "matches",
        }
    }

    /// The capability whose import is named `name`.
    pub fn from_import(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Worker-wide WASM settings: defaults for every module, and the ceilings a manifest may not
/// exceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WasmConfig {
    /// Linear-memory cap per instance, in MiB; also the most a manifest may ask for.
    pub max_memory_mb: u64,
    /// Fuel (roughly, wasm instructions) per call (413 when exhausted).
    pub fuel: u64,
    /// Wall-clock deadline per call in milliseconds (408).
    pub timeout_ms: u64,
    /// Largest output a module may return, in bytes (413).
    pub max_output_bytes: u64,
    /// Wasm stack per call in KiB; deeper recursion traps (413).
    pub max_stack_kb: u64,
    /// Instances that may exist at once across all modules (pool size); 0 = 16 per sandbox
    /// thread. When all are in use a request gets 503.
    pub max_instances: u32,
    /// Compiled code kept for modules no longer (or not yet again) served, in MiB: the least
    /// recently used are forgotten beyond it (a rollback to one of them compiles it again).
    pub module_cache_mb: u64,
    /// Keep compiled modules on disk (under `<data_dir>/wasm-cache`) too, so a restarted
    /// worker loads them instead of compiling them again.
    pub disk_cache: bool,
    /// Longest pattern `mofa::matches` accepts, in bytes (413 beyond it).
    pub max_regex_bytes: usize,
    /// Start short calls on the thread that received the request (see
    /// `crate::plugin::InlineGate`); off: every call is handed to a sandbox thread.
    pub inline: bool,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            max_memory_mb: 64,
            fuel: 100_000_000,
            timeout_ms: 1_000,
            max_output_bytes: 8 << 20,
            max_stack_kb: 512,
            max_instances: 0,
            module_cache_mb: 256,
            disk_cache: true,
            max_regex_bytes: 1024,
            inline: true,
        }
    }
}

/// Per-module limits from a manifest; unset fields take the worker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestLimits {
    /// Memory cap in MiB (at most the worker's `max_memory_mb`).
    pub max_memory_mb: Option<u64>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Deadline per call in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Largest output in bytes.
    pub max_output_bytes: Option<u64>,
}

/// A module's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Manifest {
    /// Version string reported in metadata.
    pub version: Option<String>,
    /// One-line description.
    pub description: Option<String>,
    /// Host functions the module may import.
    pub capabilities: Vec<Capability>,
    /// WASI preview 1 (`wasi_snapshot_preview1`): clocks, random, stdout/stderr into the
    /// worker's log; no file system or network. For modules built for `wasm32-wasip1`.
    pub wasi: bool,
    /// Limits.
    pub limits: ManifestLimits,
    /// Values `get_config` returns, by key.
    pub config: toml::Table,
}

impl Manifest {
    /// Parses a manifest.
    pub fn from_toml(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Whether `capability` is granted.
    pub fn grants(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// The limits one module runs under: manifest over worker defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub(crate) max_memory_bytes: usize,
    pub(crate) fuel: u64,
    pub(crate) timeout: Duration,
    pub(crate) max_output_bytes: usize,
}

impl Limits {
    /// Resolves a manifest's limits against the worker's; a memory cap above the worker's
    /// ceiling is refused.
    pub(crate) fn resolve(
        worker: &WasmConfig,
        manifest: &ManifestLimits,
    ) -> Result<Limits, String> {
        let memory_mb = manifest.max_memory_mb.unwrap_or(worker.max_memory_mb);
        if memory_mb > worker.max_memory_mb {
            return Err(format!(
                "manifest asks for max_memory_mb = {memory_mb}, above the worker's ceiling of {} (wasm.max_memory_mb)",
                worker.max_memory_mb
            ));
        }
        let timeout_ms = manifest.timeout_ms.unwrap_or(worker.timeout_ms);
        if timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".into());
        }
        Ok(Limits {
            max_memory_bytes: (memory_mb << 20) as usize,
            fuel: manifest.fuel.unwrap_or(worker.fuel),
            timeout: Duration::from_millis(timeout_ms),
            max_output_bytes: manifest.max_output_bytes.unwrap_or(worker.max_output_bytes) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_capabilities_limits_and_config() {
        let m = Manifest::from_toml(
            "capabilities = [\"log\", \"call_plugin\"]\n[limits]\nfuel = 5\n[config]\ntop = 3\n",
        )
        .expect("parses");
        assert!(m.grants(Capability::Log) && m.grants(Capability::CallPlugin));
        assert!(!m.grants(Capability::Now));
        assert_eq!(m.limits.fuel, Some(5));
        assert_eq!(m.config.get("top").and_then(|v| v.as_integer()), Some(3));
        assert!(Manifest::from_toml("capabilities = [\"fs\"]").is_err());
    }

    #[test]
    fn memory_above_the_ceiling_is_refused() {
        let worker = WasmConfig::default();
        let too_much = ManifestLimits {
            max_memory_mb: Some(worker.max_memory_mb + 1),
            ..ManifestLimits::default()
        };
        assert!(Limits::resolve(&worker, &too_much).is_err());
        let limits = Limits::resolve(&worker, &ManifestLimits::default()).expect("defaults");
        assert_eq!(limits.fuel, worker.fuel);
    }
}
