//! The plugin model: what every plugin kind has in common.
//!
//! A plugin is anything implementing [`AgentPlugin`]: metadata, a lifecycle (load, init, start,
//! stop, unload) and `execute`, which takes one [`Value`] and returns one. The
//! [`PluginManager`] owns plugins, drives them through the [`PluginState`] machine and refuses
//! illegal transitions. `execute` takes `&self` and may run concurrently: nothing is locked
//! across a call.

mod error;
mod inline;
mod manager;
pub mod matcher;
mod nested;
mod pool;
mod state;

pub use error::PluginError;
pub use inline::{InlineCall, InlineGate, INLINE_BACKOFF, LONG_CALL};
pub use manager::{ManagedPlugin, PluginInfo, PluginManager};
pub(crate) use nested::call_nested;
pub(crate) use pool::{block_on, panic_message};
pub use pool::{SandboxPool, THREAD_NAME_PREFIX as SANDBOX_THREAD_PREFIX};
pub use state::{Lifecycle, PluginState};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::wire::Value;

/// The kind of a plugin: where its code comes from and how it is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Rust compiled into the binary; trusted, runs inline.
    Native,
    /// A WebAssembly module run by wasmtime in a sandbox.
    Wasm,
    /// A Rhai script run in a sandboxed engine.
    Rhai,
}

impl PluginKind {
    /// The lowercase name used in events and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Native => "native",
            PluginKind::Wasm => "wasm",
            PluginKind::Rhai => "rhai",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMetadata {
    /// Stable identifier; also the plugin's name on the bus (`mofa.exec.<id>`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Version of the plugin's code.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Plugin kind.
    pub kind: PluginKind,
    /// Free-form capability tags (e.g. `"pricing"`, `"echo"`).
    pub capabilities: Vec<String>,
    /// Set when the plugin is a tool an LLM can call: its description and argument schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolSpec>,
}

/// A tool as the function-calling APIs of LLMs describe one: a name (the plugin's), a
/// description, and a JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's (and the plugin's) name.
    pub name: String,
    /// What the tool does, for the model choosing it.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: serde_json::Value,
}

impl PluginMetadata {
    /// Metadata with `name` equal to `id` and no capabilities.
    pub fn new(id: impl Into<String>, kind: PluginKind) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            version: "0.0.0".to_string(),
            description: String::new(),
            kind,
            capabilities: Vec::new(),
            tool: None,
        }
    }

    /// Sets the version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a capability tag.
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }
}

/// A plugin's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub enum Health {
    /// Serving normally.
    Healthy,
    /// Serving, but something is off.
    Degraded(String),
    /// Not able to serve.
    Unhealthy(String),
}

/// Where a request comes from: how many plugin-to-plugin calls deep it is, and by when the
/// caller needs the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallContext {
    /// 0 for a request from a client; n for a request made by a plugin at depth n - 1.
    pub depth: u32,
    /// The caller's deadline, when another plugin on this worker made the call; a nested call
    /// never runs past it.
    pub deadline: Option<std::time::Instant>,
    /// When the worker admitted the request; a plugin's own deadline counts from here, so time
    /// spent waiting for a sandbox thread counts too.
    pub admitted: Option<std::time::Instant>,
}

impl CallContext {
    /// The deadline for a call that may take `timeout`: now + `timeout`, or the caller's
    /// deadline if that comes first.
    pub fn deadline_for(&self, timeout: std::time::Duration) -> std::time::Instant {
        let own = self.admitted.unwrap_or_else(std::time::Instant::now) + timeout;
        self.deadline.map_or(own, |caller| caller.min(own))
    }
}

/// Deepest chain of plugin-to-plugin calls allowed; deeper calls fail with 413 (a loop of
/// plugins calling each other ends here instead of running forever).
pub const MAX_CALL_DEPTH: u32 = 8;

/// Lets a plugin call another plugin by name: locally when this worker serves it, otherwise
/// over the bus. The only way the plugin layers reach NATS.
pub trait PluginCaller: Send + Sync + 'static {
    /// Calls `plugin` with `input` in `context` (the new call's depth and the caller's
    /// deadline).
    fn call(
        &self,
        plugin: &str,
        input: Value,
        context: CallContext,
    ) -> futures::future::BoxFuture<'static, Result<Value, PluginError>>;
}

/// The interface every plugin kind implements.
///
/// Lifecycle methods are called by the [`PluginManager`] in state-machine order and never
/// concurrently with each other for one plugin; `execute` is called only while the plugin is
/// `Running`, possibly many times at once. A native plugin implements `metadata` and `execute`
/// (the rest have defaults) and is served by handing it to
/// [`Worker::start_with`](crate::worker::Worker::start_with); `examples/native_plugin.rs` runs
/// one.
///
/// ```no_run
/// use async_trait::async_trait;
/// use mofa_bus::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata, Value};
///
/// struct Double {
///     meta: PluginMetadata,
/// }
///
/// #[async_trait]
/// impl AgentPlugin for Double {
///     fn metadata(&self) -> &PluginMetadata {
///         &self.meta
///     }
///
///     async fn execute(&self, input: Value) -> Result<Value, PluginError> {
///         match input.as_f64() {
///             Some(x) => Ok(Value::from(x * 2.0)),
///             None => Err(PluginError::BadInput("give a number".into())),
///         }
///     }
/// }
///
/// let double = Double { meta: PluginMetadata::new("double", PluginKind::Native) };
/// ```
#[async_trait]
pub trait AgentPlugin: Send + Sync + 'static {
    /// What the plugin is.
    fn metadata(&self) -> &PluginMetadata;

    /// Acquire what the plugin needs (read files, compile). Unloaded → Loaded.
    async fn load(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Prepare internal state once loaded.
    async fn init(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Begin serving. Loaded/Stopped → Running.
    async fn start(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Stop serving. Running → Stopped.
    async fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Release resources. → Unloaded.
    async fn unload(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Run one request.
    async fn execute(&self, input: Value) -> Result<Value, PluginError>;

    /// Run one request made in `context` (e.g. by another plugin, `depth` calls deep).
    /// Plugins that call other plugins override this to pass the context on; the default
    /// ignores it.
    async fn execute_in(&self, input: Value, context: CallContext) -> Result<Value, PluginError> {
        let _ = context;
        self.execute(input).await
    }

    /// The wall-clock limit of one call, counted from admission, if the plugin keeps one. The
    /// worker refuses (503) a request that could not start before it, instead of starting it
    /// with no time left.
    fn timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// For a sandboxed plugin: whether its calls start on the thread that received the request
    /// (and move to the sandbox pool only if they must), rather than being handed to the pool
    /// first. A plugin says yes only while its calls are short and it bounds what runs there
    /// (see `ScriptEngine::try_inline`). Native plugins always run where they are called.
    fn starts_inline(&self) -> bool {
        false
    }

    /// Report health.
    fn health(&self) -> Health {
        Health::Healthy
    }
}
