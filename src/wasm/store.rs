//! The per-call store data of a WASM instance: the memory cap, the call's deadline and depth,
//! whether it runs inline, and what every host function of the module shares. Both the mofa
//! host functions ([`super::host`]) and the WASI ones ([`super::wasi`]) read it, so it lives
//! apart from either.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{bail, format_err, ResourceLimiter};

use crate::plugin::PluginCaller;

/// The memory cap, installed with `Store::limiter`. Records a refusal so the error reply can
/// say the cap (not some other trap) stopped the call.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    pub(crate) max_bytes: usize,
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            bail!(
                "memory cap of {} bytes exceeded: the module asked for {desired} bytes",
                self.max_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// What a module's host functions share, fixed at load.
pub(crate) struct HostContext {
    pub(crate) plugin: String,
    /// The manifest's `[config]`, each value already encoded as `get_config` returns it.
    pub(crate) config: Vec<(String, bytes::Bytes)>,
    /// `wasm.max_regex_bytes`.
    pub(crate) max_regex_bytes: usize,
    pub(crate) caller: Option<Arc<dyn PluginCaller>>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) pool: Arc<crate::plugin::SandboxPool>,
}

/// Per-call store data.
pub(crate) struct StoreData {
    pub(crate) memory: MemoryCap,
    pub(crate) host: Arc<HostContext>,
    pub(crate) depth: u32,
    pub(crate) deadline: Instant,
    /// The call runs inline (see `WasmRuntime::try_inline`): a host function that would do
    /// something visible stops it instead, setting `deferred`.
    pub(crate) inline: bool,
    /// The inline call was stopped to run again on the sandbox pool.
    pub(crate) deferred: bool,
}

impl StoreData {
    /// Stops an inline call before a host function acts; `Ok` outside inline calls.
    pub(crate) fn not_inline(&mut self) -> wasmtime::Result<()> {
        if !self.inline {
            return Ok(());
        }
        self.deferred = true;
        Err(format_err!("continue on the sandbox pool"))
    }
}
