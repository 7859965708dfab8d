//! A WebAssembly module as a plugin: `plugins/<name>.wasm` with an optional
//! `plugins/<name>.toml` manifest. A call runs in a fresh instance: first where it was made,
//! when the module's recent calls were short (see [`WasmRuntime::try_inline`] and
//! [`crate::plugin::InlineGate`]), and on the sandbox pool otherwise.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;

use super::config::Manifest;
use super::runtime::{Loaded, WasmRuntime};
use crate::plugin::{
    AgentPlugin, CallContext, InlineGate, PluginError, PluginKind, PluginMetadata, SandboxPool,
    Value,
};
use crate::wire;

/// A wasm plugin.
pub struct WasmPlugin {
    meta: PluginMetadata,
    bytes: Arc<[u8]>,
    manifest: Manifest,
    runtime: Arc<WasmRuntime>,
    loaded: ArcSwapOption<Loaded>,
    inline: InlineGate,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("meta", &self.meta)
            .finish()
    }
}

impl WasmPlugin {
    /// A plugin named `name` running `bytes` (a binary module or WAT text) under `manifest`.
    /// Nothing is compiled until `load`.
    pub fn new(
        name: &str,
        bytes: impl Into<Arc<[u8]>>,
        manifest: Manifest,
        runtime: Arc<WasmRuntime>,
    ) -> Self {
        let meta = PluginMetadata::new(name, PluginKind::Wasm)
            .version(manifest.version.clone().unwrap_or_else(|| "0.0.0".into()))
            .description(
                manifest
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("WebAssembly module {name}")),
            );
        Self {
            meta,
            bytes: bytes.into(),
            manifest,
            runtime,
            loaded: ArcSwapOption::empty(),
            inline: InlineGate::default(),
        }
    }

    /// Sets the version label.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.meta.version = version.into();
        self
    }

    /// Runs one call on the current thread (fresh instance, all limits, deadline from now),
    /// bypassing the sandbox pool. For embedding and benchmarks; blocking.
    pub fn invoke_blocking(&self, input: &Value) -> Result<Value, PluginError> {
        let loaded = self
            .loaded
            .load_full()
            .ok_or_else(|| PluginError::Failed(format!("{} is not loaded", self.meta.id)))?;
        let deadline = std::time::Instant::now() + loaded.limits.timeout;
        self.runtime
            .invoke(&loaded, &wire::encode(input), deadline, 0)
    }

    /// SHA-256 of the loaded module, hex-encoded.
    pub fn sha256(&self) -> Option<String> {
        self.loaded.load().as_ref().map(|l| l.sha256.clone())
    }
}

#[async_trait]
impl AgentPlugin for WasmPlugin {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn load(&self) -> Result<(), PluginError> {
        let runtime = self.runtime.clone();
        let (name, bytes, manifest) = (
            self.meta.id.clone(),
            self.bytes.clone(),
            self.manifest.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, &manifest))
            .await
            .map_err(|e| PluginError::Load(format!("compiler task failed: {e}")))??;
        self.loaded.store(Some(Arc::new(loaded)));
        Ok(())
    }

    async fn unload(&self) -> Result<(), PluginError> {
        self.loaded.store(None);
        Ok(())
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.execute_in(input, CallContext::default()).await
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        self.loaded
            .load()
            .as_ref()
            .map(|loaded| loaded.limits.timeout)
    }

    fn starts_inline(&self) -> bool {
        self.runtime.config().inline && !self.manifest.wasi && self.inline.open()
    }

    async fn execute_in(&self, input: Value, context: CallContext) -> Result<Value, PluginError> {
        let loaded = self
            .loaded
            .load_full()
            .ok_or_else(|| PluginError::Failed(format!("{} is not loaded", self.meta.id)))?;
        let timeout = loaded.limits.timeout;
        // The deadline runs from admission, so time spent queued for a sandbox thread counts.
        let deadline = context.deadline_for(timeout);
        let runtime = self.runtime.clone();
        let body = wire::encode(&input);
        if self.starts_inline() && !SandboxPool::on_pool_thread() {
            let started = std::time::Instant::now();
            match runtime.try_inline(&loaded, &body, deadline, context.depth) {
                Some(call) => {
                    self.inline.finished(started.elapsed(), call.worked_long);
                    return call.result;
                }
                None => self.inline.close(),
            }
        }
        self.runtime
            .pool()
            .run_until(
                deadline,
                move || runtime.invoke(&loaded, &body, deadline, context.depth),
                || {
                    PluginError::Timeout(format!(
                        "module exceeded its deadline of {} ms",
                        timeout.as_millis()
                    ))
                },
            )
            .await
    }
}
