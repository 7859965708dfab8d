//! The worker: the NATS side of the service.
//!
//! [`Worker::start`] connects, loads plugins (the native ones compiled in, plus every `*.rhai`
//! script and `*.wasm` module in the plugins directory), subscribes each running plugin to `mofa.exec.<plugin>` in
//! the queue group `mofa`, and answers the NATS Services API. [`Worker::shutdown`] drains:
//! no new requests are taken, every request already routed to this worker is answered, events
//! are flushed, then the connection closes.

mod caller;
mod endpoint;
mod service;
pub mod shutdown;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

pub use endpoint::EndpointStats;
pub use service::SERVICE_VERSION;

use crate::config::{ConfigError, WorkerConfig};
use crate::plugin::{AgentPlugin, PluginError, PluginManager, SandboxPool};
use crate::rhai::{RhaiPlugin, ScriptEngine};
use crate::subjects::{self, QUEUE_GROUP};
use crate::wasm::{WasmPlugin, WasmRuntime};

/// Why a worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No NATS server answered.
    #[error("cannot connect to NATS at {url}: {source} (start one with `nats-server -js`, or run `mofa worker --dev`)")]
    Connect {
        /// The URL tried.
        url: String,
        /// The connection error.
        source: async_nats::ConnectError,
    },
    /// A subscription could not be made.
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The error.
        source: async_nats::SubscribeError,
    },
    /// A plugin could not be registered.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Flushing replies and events at shutdown failed.
    #[error("flush at shutdown failed: {0}")]
    Flush(String),
}

/// A plugin file that was found but not served, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (compile error with position, invalid name, ...).
    pub error: String,
}

/// A running worker.
pub struct Worker {
    id: Arc<str>,
    client: Client,
    manager: Arc<PluginManager>,
    failures: Vec<LoadFailure>,
    shutdown: watch::Sender<bool>,
    endpoints: Vec<JoinHandle<()>>,
    service: JoinHandle<()>,
    tracker: TaskTracker,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

impl Worker {
    /// Starts a worker serving the built-in native plugins and the plugins directory.
    pub async fn start(config: WorkerConfig) -> Result<Worker, WorkerError> {
        Self::start_with(config, crate::native::builtin()).await
    }

    /// Starts a worker serving `natives` (instead of the built-in ones) and the plugins
    /// directory. This is how an application embeds its own native plugins.
    pub async fn start_with(
        config: WorkerConfig,
        natives: Vec<Arc<dyn AgentPlugin>>,
    ) -> Result<Worker, WorkerError> {
        config.validate()?;
        let id: Arc<str> = config
            .worker_id
            .clone()
            .unwrap_or_else(|| nuid::next().as_str().to_string())
            .into();
        let client = async_nats::ConnectOptions::new()
            .name(format!("mofa-worker {id}"))
            .connect(config.nats_url.as_str())
            .await
            .map_err(|source| WorkerError::Connect {
                url: config.nats_url.clone(),
                source,
            })?;

        let manager = Arc::new(PluginManager::new());
        for plugin in natives {
            manager.register(plugin)?;
        }
        let pool = SandboxPool::new(config.sandbox_threads);
        let engine = Arc::new(ScriptEngine::with_pool(config.rhai.clone(), pool.clone()));
        let wasm = WasmRuntime::new(config.wasm.clone(), pool)?;
        wasm.set_caller(caller::new(
            &manager,
            client.clone(),
            Duration::from_millis(config.wasm.timeout_ms),
        ));
        let mut failures = register_files(&manager, &config.plugins_dir, &engine, &wasm);
        for plugin in manager.plugins() {
            if let Err(e) = plugin.activate().await {
                tracing::error!(plugin = plugin.id(), error = %e, "plugin not served");
                let extension = match plugin.kind() {
                    crate::plugin::PluginKind::Wasm => "wasm",
                    _ => "rhai",
                };
                failures.push(LoadFailure {
                    path: config
                        .plugins_dir
                        .join(format!("{}.{extension}", plugin.id())),
                    error: e.to_string(),
                });
            }
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let mut endpoints = Vec::new();
        let mut served = Vec::new();
        for plugin in manager.plugins() {
            if plugin.state() != crate::plugin::PluginState::Running {
                continue;
            }
            let ep = Arc::new(endpoint::Endpoint::new(
                plugin.clone(),
                client.clone(),
                &config,
                id.clone(),
            ));
            let subject = subjects::exec(plugin.id());
            let requests = client
                .queue_subscribe(subject.clone(), QUEUE_GROUP.to_string())
                .await
                .map_err(|source| WorkerError::Subscribe { subject, source })?;
            served.push(ep.clone());
            endpoints.push(tokio::spawn(ep.serve(
                requests,
                shutdown_rx.clone(),
                tracker.clone(),
            )));
            tracing::info!(plugin = plugin.id(), kind = %plugin.kind(), "serving on {}", subjects::exec(plugin.id()));
        }

        let info = Arc::new(service::ServiceInfo {
            id: id.to_string(),
            endpoints: served,
        });
        let service = tokio::spawn({
            let client = client.clone();
            let rx = shutdown_rx.clone();
            async move {
                if let Err(e) = service::serve(client, info, rx).await {
                    tracing::error!(error = %e, "services API not available");
                }
            }
        });
        // Make sure every subscription is registered with the server before reporting ready.
        client
            .flush()
            .await
            .map_err(|e| WorkerError::Flush(e.to_string()))?;
        tracing::info!(worker = %id, url = %config.nats_url, "worker ready");
        Ok(Worker {
            id,
            client,
            manager,
            failures,
            shutdown,
            endpoints,
            service,
            tracker,
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        })
    }

    /// This worker's id (also its Services API instance id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plugin manager.
    pub fn manager(&self) -> &Arc<PluginManager> {
        &self.manager
    }

    /// Plugin files found but not served.
    pub fn load_failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The worker's NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Drains and stops: stop taking requests, answer every in-flight one, flush, close.
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        tracing::info!(worker = %self.id, "draining");
        let _ = self.shutdown.send(true);
        for endpoint in self.endpoints {
            let _ = endpoint.await;
        }
        let _ = self.service.await;
        self.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "drain timeout passed with requests still running"
            );
        }
        for plugin in self.manager.plugins() {
            let _ = plugin.transition(crate::plugin::Lifecycle::Stop).await;
            let _ = plugin.transition(crate::plugin::Lifecycle::Unload).await;
        }
        let flushed = self
            .client
            .flush()
            .await
            .map_err(|e| WorkerError::Flush(e.to_string()));
        tracing::info!(worker = %self.id, "stopped");
        flushed
    }
}

/// Registers every `*.rhai` script and `*.wasm` module in `dir`; files that cannot become
/// plugins are reported and skipped. A missing directory is not an error: the native plugins
/// are still served.
fn register_files(
    manager: &PluginManager,
    dir: &Path,
    engine: &Arc<ScriptEngine>,
    wasm: &Arc<WasmRuntime>,
) -> Vec<LoadFailure> {
    let mut failures = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "plugins directory not readable; serving native plugins only");
            return failures;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai" || x == "wasm") && p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let plugin: Result<Arc<dyn AgentPlugin>, PluginError> =
            if path.extension().is_some_and(|x| x == "wasm") {
                WasmPlugin::from_file(&path, wasm.clone()).map(|p| Arc::new(p) as _)
            } else {
                RhaiPlugin::from_file(&path, engine.clone()).map(|p| Arc::new(p) as _)
            };
        let registered = plugin.and_then(|plugin| manager.register(plugin).map(|_| ()));
        if let Err(e) = registered {
            tracing::error!(path = %path.display(), error = %e, "plugin skipped");
            failures.push(LoadFailure {
                path,
                error: e.to_string(),
            });
        }
    }
    failures
}
