//! A Rhai script as a plugin.
//!
//! `load` compiles the source once; `execute` runs the cached entry function with the
//! script's state map and a deadline counted from admission: first where it was called, when
//! the script's recent calls were short (see [`ScriptEngine::try_inline`]), and on the sandbox
//! pool when that is not allowed or the call turns out to need the pool.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;

use super::engine::{Entry, ScriptEngine, StateMap};
use crate::plugin::{
    AgentPlugin, CallContext, InlineGate, PluginError, PluginKind, PluginMetadata, SandboxPool,
    Value,
};

/// A script plugin.
pub struct RhaiPlugin {
    meta: PluginMetadata,
    source: String,
    engine: Arc<ScriptEngine>,
    compiled: ArcSwapOption<Entry>,
    state: StateMap,
    inline: InlineGate,
}

impl std::fmt::Debug for RhaiPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiPlugin")
            .field("meta", &self.meta)
            .finish()
    }
}

impl RhaiPlugin {
    /// A plugin named `name` running `source` on `engine`. Nothing is compiled until `load`.
    pub fn new(name: &str, source: impl Into<String>, engine: Arc<ScriptEngine>) -> Self {
        Self {
            meta: PluginMetadata::new(name, PluginKind::Rhai)
                .version("0.0.0")
                .description(format!("Rhai script {name}")),
            source: source.into(),
            engine,
            compiled: ArcSwapOption::empty(),
            state: StateMap::default(),
            inline: InlineGate::default(),
        }
    }

    /// Uses `state` as the script's state map (e.g. the map of the revision this one replaces).
    pub fn with_state(mut self, state: StateMap) -> Self {
        self.state = state;
        self
    }

    /// Sets the version label.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.meta.version = version.into();
        self
    }

    /// The script's state map.
    pub fn state(&self) -> &StateMap {
        &self.state
    }

    /// Uses an already compiled `entry` (see [`ScriptEngine::compile`]); a tool takes its name,
    /// description and schema from it.
    pub fn with_entry(mut self, entry: Entry) -> Self {
        if let Some(tool) = &entry.tool {
            self.meta.id = tool.spec.name.clone();
            self.meta.name = tool.spec.name.clone();
            self.meta.description = tool.spec.description.clone();
            self.meta.tool = Some(tool.spec.clone());
        }
        self.compiled.store(Some(Arc::new(entry)));
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = description.into();
        self
    }

    /// The name of the entry function, once loaded.
    pub fn entry_function(&self) -> Option<String> {
        self.compiled
            .load()
            .as_ref()
            .and_then(|e| e.function().map(str::to_string))
    }
}

#[async_trait]
impl AgentPlugin for RhaiPlugin {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn load(&self) -> Result<(), PluginError> {
        if self.compiled.load().is_some() {
            return Ok(());
        }
        let engine = self.engine.clone();
        let name = self.meta.id.clone();
        let source = self.source.clone();
        let entry = tokio::task::spawn_blocking(move || engine.compile(&name, &source))
            .await
            .map_err(|e| PluginError::Load(format!("compiler task failed: {e}")))??;
        self.compiled.store(Some(Arc::new(entry)));
        Ok(())
    }

    async fn unload(&self) -> Result<(), PluginError> {
        self.compiled.store(None);
        Ok(())
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.execute_in(input, CallContext::default()).await
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        Some(self.engine.config().timeout())
    }

    fn starts_inline(&self) -> bool {
        self.engine.config().inline && self.inline.open()
    }

    async fn execute_in(&self, input: Value, context: CallContext) -> Result<Value, PluginError> {
        let entry = self
            .compiled
            .load_full()
            .ok_or_else(|| PluginError::Failed(format!("{} is not compiled", self.meta.id)))?;
        let engine = self.engine.clone();
        let timeout = engine.config().timeout();
        // The deadline runs from admission, so time spent queued for a sandbox thread counts.
        let deadline = context.deadline_for(timeout);
        let state = self.state.clone();
        if self.starts_inline() && !SandboxPool::on_pool_thread() {
            let started = std::time::Instant::now();
            let attempt = input.clone();
            let inline = engine.try_inline(
                &entry,
                attempt,
                deadline,
                Some(state.clone()),
                context.depth,
            );
            match inline {
                Some(call) => {
                    self.inline.finished(started.elapsed(), call.worked_long);
                    return call.result;
                }
                None => self.inline.close(),
            }
        }
        self.engine
            .pool()
            .run_until(
                deadline,
                move || engine.call_until(&entry, input, deadline, Some(state), context.depth),
                || {
                    PluginError::Timeout(format!(
                        "script exceeded its deadline of {} ms",
                        timeout.as_millis()
                    ))
                },
            )
            .await
    }
}
