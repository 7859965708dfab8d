//! Running plugin files without a bus: the plugin author's inner loop (`mofa run`, `mofa test`)
//! and the check `mofa publish` makes before a revision leaves the machine.
//!
//! A [`LocalRunner`] holds what a worker holds minus NATS: the sandbox pool, the Rhai engine
//! and the wasmtime runtime built from the same configuration (so the same limits and
//! deadlines apply), and a plugin manager with the native plugins. A plugin file is built by
//! its kind's entry in [`crate::kinds`], exactly as a worker builds it, and `call_plugin`
//! reaches the native plugins and the other files loaded here, never the bus.

pub mod cases;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::config::WorkerConfig;
use crate::kinds;
use crate::plugin::{
    AgentPlugin, CallContext, ManagedPlugin, PluginCaller, PluginError, PluginManager, Value,
};

/// Plugins run in the worker's sandbox, with no bus.
pub struct LocalRunner {
    manager: Arc<PluginManager>,
    engines: kinds::Engines,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner").finish_non_exhaustive()
    }
}

impl LocalRunner {
    /// A runner with `config`'s limits, serving `natives` to `call_plugin`. Call it inside a
    /// tokio runtime.
    pub async fn new(
        config: &WorkerConfig,
        natives: Vec<Arc<dyn AgentPlugin>>,
    ) -> Result<LocalRunner, PluginError> {
        let manager = Arc::new(PluginManager::new());
        let engines = kinds::Engines::new(
            config.rhai.clone(),
            config.wasm.clone(),
            config.sandbox_threads,
            None,
        )?;
        engines.set_caller(Arc::new(LocalCaller {
            manager: Arc::downgrade(&manager),
        }));
        for native in natives {
            manager.register(native)?.activate().await?;
        }
        Ok(LocalRunner { manager, engines })
    }

    /// Builds the plugin in `path` (a script, or a module with its manifest) as a worker would,
    /// and starts it. It replaces an earlier plugin of the same name.
    pub async fn load(&self, path: &Path) -> Result<Arc<ManagedPlugin>, PluginError> {
        let (kind, code) = kinds::read(path)?;
        let managed = self.start(kind, code).await?;
        self.manager.adopt(managed.clone());
        Ok(managed)
    }

    /// Builds the plugin in `path` exactly as every worker will build the revision `mofa
    /// publish` makes of it: under the name it is served as (a tool's name), with the kind's
    /// build (a script compiled and its top level run, a module compiled against its manifest's
    /// grants and this runner's limits), the name check and the start. The served name, or why
    /// a worker would reject it; nothing is kept.
    ///
    /// ```no_run
    /// # async fn check() -> Result<(), Box<dyn std::error::Error>> {
    /// use mofa_bus::config::WorkerConfig;
    /// use mofa_bus::local::LocalRunner;
    ///
    /// let runner = LocalRunner::new(&WorkerConfig::default(), Vec::new()).await?;
    /// let name = runner.verify(std::path::Path::new("plugins/discount.rhai")).await?;
    /// println!("{name} builds as a worker would build it");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify(&self, path: &Path) -> Result<String, PluginError> {
        let (kind, mut code) = kinds::read(path)?;
        code.name = tokio::task::spawn_blocking({
            let code = code.clone();
            move || (kind.served_name)(&code)
        })
        .await
        .map_err(|e| PluginError::Load(format!("build task failed: {e}")))?;
        self.verify_code(kind, code).await
    }

    /// [`verify`](Self::verify) for code already named as it is served (a bucket record's).
    pub async fn verify_code(
        &self,
        kind: &'static kinds::Kind,
        code: kinds::Code,
    ) -> Result<String, PluginError> {
        let name = code.name.clone();
        let managed = self.start(kind, code).await?;
        kinds::check_built_name(&name, managed.id())?;
        let _ = managed.transition(crate::plugin::Lifecycle::Stop).await;
        let _ = managed.transition(crate::plugin::Lifecycle::Unload).await;
        Ok(name)
    }

    /// Builds `code` off the async threads (a script's top level runs while it builds) and
    /// starts it.
    async fn start(
        &self,
        kind: &'static kinds::Kind,
        code: kinds::Code,
    ) -> Result<Arc<ManagedPlugin>, PluginError> {
        let plugin = kinds::build(kind, code, self.engines.runtimes(Default::default())).await?;
        let managed = Arc::new(ManagedPlugin::new(plugin));
        managed.activate().await?;
        Ok(managed)
    }

    /// Runs `plugin` once on `input`, its deadline counted from now; the result and the time
    /// it took.
    pub async fn run(
        &self,
        plugin: &ManagedPlugin,
        input: Value,
    ) -> (Result<Value, PluginError>, Duration) {
        let started = Instant::now();
        let context = CallContext {
            depth: 0,
            deadline: None,
            admitted: Some(started),
        };
        let result = plugin.execute_in(input, context).await;
        (result, started.elapsed())
    }
}

/// `call_plugin` for a [`LocalRunner`]: the plugins it holds, or a 503 naming the bus it
/// does not have.
struct LocalCaller {
    manager: Weak<PluginManager>,
}

impl PluginCaller for LocalCaller {
    fn call(
        &self,
        plugin: &str,
        input: Value,
        context: CallContext,
    ) -> BoxFuture<'static, Result<Value, PluginError>> {
        let local = self.manager.upgrade().and_then(|m| m.running(plugin));
        let name = plugin.to_string();
        Box::pin(async move {
            match local {
                Some(local) => local.execute_in(input, context).await,
                None => Err(PluginError::Unavailable(format!(
                    "call_plugin({name}): no plugin {name} here; a local run serves the native plugins and the files it was given, not the bus"
                ))),
            }
        })
    }
}
