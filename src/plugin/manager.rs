//! The plugin manager: registers plugins and drives their lifecycle.
//!
//! Plugins live in a table behind a `RwLock` that is only held long enough to clone an `Arc`
//! out of it; `execute` then runs with no lock held, so any number of calls to one plugin run
//! at once. Lifecycle steps for one plugin are serialised by that plugin's own async mutex,
//! which `execute` never takes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::state::AtomicState;
use super::{
    AgentPlugin, CallContext, Lifecycle, PluginError, PluginKind, PluginMetadata, PluginState,
    Value,
};

/// A plugin together with its lifecycle state.
pub struct ManagedPlugin {
    plugin: Arc<dyn AgentPlugin>,
    state: AtomicState,
    lifecycle: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ManagedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedPlugin")
            .field("id", &self.id())
            .field("state", &self.state())
            .finish()
    }
}

impl ManagedPlugin {
    /// Wraps a plugin, `Unloaded`, outside any manager (e.g. a new revision being loaded
    /// beside the one serving).
    pub fn new(plugin: Arc<dyn AgentPlugin>) -> Self {
        Self {
            plugin,
            state: AtomicState::new(PluginState::Unloaded),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// The plugin's id (its name on the bus).
    pub fn id(&self) -> &str {
        &self.plugin.metadata().id
    }

    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        self.plugin.metadata().kind
    }

    /// The plugin's metadata.
    pub fn metadata(&self) -> &PluginMetadata {
        self.plugin.metadata()
    }

    /// The plugin's limit for one call, if it keeps one (see [`AgentPlugin::timeout`]).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.plugin.timeout()
    }

    /// Whether its calls start where they are received (see [`AgentPlugin::starts_inline`]).
    pub fn starts_inline(&self) -> bool {
        self.plugin.starts_inline()
    }

    /// The current lifecycle state.
    pub fn state(&self) -> PluginState {
        self.state.get()
    }

    /// Runs one request. Refused with [`PluginError::NotRunning`] unless the plugin is running.
    pub async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.execute_in(input, CallContext::default()).await
    }

    /// Runs one request made in `context`.
    pub async fn execute_in(
        &self,
        input: Value,
        context: CallContext,
    ) -> Result<Value, PluginError> {
        let state = self.state.get();
        if state != PluginState::Running {
            return Err(PluginError::NotRunning {
                plugin: self.id().to_string(),
                state,
            });
        }
        self.plugin.execute_in(input, context).await
    }

    /// Takes one lifecycle step, checking the transition first. A failing step leaves the
    /// plugin in `Error`.
    pub async fn transition(&self, action: Lifecycle) -> Result<(), PluginError> {
        let _guard = self.lifecycle.lock().await;
        let state = self.state.get();
        if !state.allows(action) {
            return Err(PluginError::InvalidTransition {
                plugin: self.id().to_string(),
                action: action.as_str(),
                state,
            });
        }
        if action == Lifecycle::Load {
            self.state.set(PluginState::Loading);
        }
        let result = match action {
            Lifecycle::Load => self.plugin.load().await,
            Lifecycle::Init => self.plugin.init().await,
            Lifecycle::Start => self.plugin.start().await,
            Lifecycle::Stop => self.plugin.stop().await,
            Lifecycle::Unload => self.plugin.unload().await,
        };
        match result {
            Ok(()) => {
                self.state.set(PluginState::after(action));
                Ok(())
            }
            Err(e) => {
                self.state.set(PluginState::Error);
                Err(e)
            }
        }
    }

    /// Load, init and start: Unloaded → Running.
    pub async fn activate(&self) -> Result<(), PluginError> {
        self.transition(Lifecycle::Load).await?;
        self.transition(Lifecycle::Init).await?;
        self.transition(Lifecycle::Start).await
    }
}

/// A row of [`PluginManager::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The plugin's metadata.
    pub metadata: PluginMetadata,
    /// Its lifecycle state.
    pub state: PluginState,
}

/// Owns plugins by id and drives their lifecycle.
///
/// ```no_run
/// # async fn run() -> Result<(), mofa_bus::plugin::PluginError> {
/// use std::sync::Arc;
/// use mofa_bus::native::Echo;
/// use mofa_bus::plugin::{PluginManager, Value};
///
/// let manager = PluginManager::new();
/// manager.register(Arc::new(Echo::new()))?.activate().await?; // Loaded, then Running
/// let reply = manager.execute("echo", Value::from("hi")).await?;
/// assert_eq!(reply, Value::from("hi"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct PluginManager {
    plugins: RwLock<BTreeMap<String, Arc<ManagedPlugin>>>,
}

impl PluginManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a plugin in the `Unloaded` state.
    pub fn register(
        &self,
        plugin: Arc<dyn AgentPlugin>,
    ) -> Result<Arc<ManagedPlugin>, PluginError> {
        let id = plugin.metadata().id.clone();
        crate::subjects::validate_name(&id).map_err(|e| PluginError::Load(e.to_string()))?;
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if plugins.contains_key(&id) {
            return Err(PluginError::Duplicate(id));
        }
        let managed = Arc::new(ManagedPlugin::new(plugin));
        plugins.insert(id, managed.clone());
        Ok(managed)
    }

    /// Puts `plugin` in the table under its id, replacing any plugin there (a new revision);
    /// returns the replaced one. Calls already running on it finish.
    pub fn adopt(&self, plugin: Arc<ManagedPlugin>) -> Option<Arc<ManagedPlugin>> {
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.id().to_string(), plugin)
    }

    /// Takes the plugin named `id` out of the table whatever its state.
    pub fn take(&self, id: &str) -> Option<Arc<ManagedPlugin>> {
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// The plugin registered under `id`, cloned out of the table.
    pub fn get(&self, id: &str) -> Option<Arc<ManagedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The plugin registered under `id` if it is running: what a call to it may use.
    pub fn running(&self, id: &str) -> Option<Arc<ManagedPlugin>> {
        self.get(id)
            .filter(|p| p.state() == super::PluginState::Running)
    }

    fn require(&self, id: &str) -> Result<Arc<ManagedPlugin>, PluginError> {
        self.get(id)
            .ok_or_else(|| PluginError::NotFound(id.to_string()))
    }

    /// Every registered plugin, in id order.
    pub fn plugins(&self) -> Vec<Arc<ManagedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Metadata and state of every plugin, in id order.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.plugins()
            .iter()
            .map(|p| PluginInfo {
                metadata: p.metadata().clone(),
                state: p.state(),
            })
            .collect()
    }

    /// Loads the plugin.
    pub async fn load(&self, id: &str) -> Result<(), PluginError> {
        self.require(id)?.transition(Lifecycle::Load).await
    }

    /// Initialises the plugin.
    pub async fn init(&self, id: &str) -> Result<(), PluginError> {
        self.require(id)?.transition(Lifecycle::Init).await
    }

    /// Starts the plugin.
    pub async fn start(&self, id: &str) -> Result<(), PluginError> {
        self.require(id)?.transition(Lifecycle::Start).await
    }

    /// Stops the plugin; calls already running finish.
    pub async fn stop(&self, id: &str) -> Result<(), PluginError> {
        self.require(id)?.transition(Lifecycle::Stop).await
    }

    /// Unloads the plugin.
    pub async fn unload(&self, id: &str) -> Result<(), PluginError> {
        self.require(id)?.transition(Lifecycle::Unload).await
    }

    /// Removes an unloaded plugin from the table.
    pub fn remove(&self, id: &str) -> Result<Arc<ManagedPlugin>, PluginError> {
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        match plugins.get(id) {
            None => Err(PluginError::NotFound(id.to_string())),
            Some(p) if p.state() != PluginState::Unloaded => Err(PluginError::InvalidTransition {
                plugin: id.to_string(),
                action: "remove",
                state: p.state(),
            }),
            Some(_) => plugins
                .remove(id)
                .ok_or_else(|| PluginError::NotFound(id.to_string())),
        }
    }

    /// Executes one request on the plugin named `id`.
    pub async fn execute(&self, id: &str, input: Value) -> Result<Value, PluginError> {
        let plugin = self.require(id)?;
        plugin.execute(input).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Slow {
        meta: PluginMetadata,
        running: AtomicUsize,
        peak: AtomicUsize,
    }

    #[async_trait]
    impl AgentPlugin for Slow {
        fn metadata(&self) -> &PluginMetadata {
            &self.meta
        }
        async fn execute(&self, input: Value) -> Result<Value, PluginError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(input)
        }
    }

    fn slow() -> Arc<Slow> {
        Arc::new(Slow {
            meta: PluginMetadata::new("slow", PluginKind::Native),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn executing_a_plugin_that_is_not_running_is_an_error() {
        let manager = PluginManager::new();
        manager.register(slow()).expect("registers");
        let err = manager.execute("slow", Value::Nil).await.unwrap_err();
        assert!(matches!(
            err,
            PluginError::NotRunning {
                state: PluginState::Unloaded,
                ..
            }
        ));
        assert_eq!(err.code().as_u16(), 503);
        manager.load("slow").await.expect("loads");
        manager.start("slow").await.expect("starts");
        assert_eq!(
            manager.execute("slow", Value::from(1)).await,
            Ok(Value::from(1))
        );
        manager.stop("slow").await.expect("stops");
        let err = manager.execute("slow", Value::Nil).await.unwrap_err();
        assert!(matches!(
            err,
            PluginError::NotRunning {
                state: PluginState::Stopped,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn illegal_transitions_are_refused() {
        let manager = PluginManager::new();
        manager.register(slow()).expect("registers");
        let err = manager.start("slow").await.unwrap_err();
        assert!(matches!(
            err,
            PluginError::InvalidTransition {
                action: "start",
                ..
            }
        ));
        manager.load("slow").await.expect("loads");
        assert!(manager.load("slow").await.is_err());
        manager.start("slow").await.expect("starts");
        assert!(manager.unload("slow").await.is_err());
        assert!(manager.remove("slow").is_err());
        manager.stop("slow").await.expect("stops");
        manager.unload("slow").await.expect("unloads");
        manager.remove("slow").expect("removes");
        assert!(matches!(
            manager.execute("slow", Value::Nil).await,
            Err(PluginError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn duplicate_and_invalid_names_are_refused() {
        let manager = PluginManager::new();
        manager.register(slow()).expect("registers");
        assert!(matches!(
            manager.register(slow()),
            Err(PluginError::Duplicate(_))
        ));
        let bad = Arc::new(Slow {
            meta: PluginMetadata::new("a.b", PluginKind::Native),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        assert!(manager.register(bad).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_to_one_plugin_run_concurrently() {
        let manager = Arc::new(PluginManager::new());
        let plugin = slow();
        manager.register(plugin.clone()).expect("registers");
        manager
            .get("slow")
            .expect("exists")
            .activate()
            .await
            .expect("activates");
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let m = manager.clone();
                tokio::spawn(async move { m.execute("slow", Value::from(i)).await })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.expect("joins"), Ok(Value::from(i)));
        }
        assert!(
            plugin.peak.load(Ordering::SeqCst) > 1,
            "calls were serialised"
        );
        assert!(started.elapsed() < Duration::from_millis(20 * 50));
    }
}
