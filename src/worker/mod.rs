//! The worker: the NATS side of the service.
//!
//! [`Worker::start`] connects, loads plugins (the native ones compiled in, plus every plugin file
//! of a kind in [`crate::kinds`] in the plugins directory), subscribes each running plugin to
//! `mofa.exec.<plugin>` in the queue group `mofa`, answers the NATS Services API, and follows
//! the plugins bucket on JetStream so that published revisions are served, replaced and
//! removed while it runs (see [`follower`]). [`Worker::shutdown`] drains: no new requests are
//! taken, every request already routed to this worker is answered, events are flushed, then
//! the connection closes.

mod caller;
mod canary;
mod endpoint;
mod events;
mod follower;
mod jobs;
mod request;
pub mod runtime;
mod service;
pub mod shutdown;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

pub use endpoint::EndpointStats;
pub use service::{SERVICE_VERSION, TOOL_DESCRIPTION, TOOL_PARAMETERS};

use crate::config::{ConfigError, WorkerConfig};
use crate::distribution::Revision;
use crate::kinds;
use crate::plugin::{AgentPlugin, Lifecycle, ManagedPlugin, PluginError, PluginManager};
use crate::rhai::StateMap;
use crate::subjects::QUEUE_GROUP;
use crate::telemetry::{Instruments, PluginSnapshot, ReloadCounts};
use endpoint::{Endpoint, Served};

/// Messages one subscription may buffer before the client drops them (async-nats's default is
/// 65,536): a burst larger than that would otherwise be lost before admission sees it.
const SUBSCRIPTION_CAPACITY: usize = 1 << 18;

/// Returns once the server has processed everything this connection sent before: a message to
/// a fresh inbox of our own comes back only after the server handled the commands ahead of it
/// (a subscription made, say). `Client::flush` only empties the local buffer, so another
/// connection could still publish before the server knows the subscription.
async fn round_trip(client: &Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the connection closed".into()),
        Err(_) => Err("no answer from the server within 10 s".into()),
    }
}

/// Why a worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection settings cannot work (a bad URL, two ways to authenticate, a missing
    /// credentials file).
    #[error(transparent)]
    Connection(#[from] crate::connection::ConnectionError),
    /// No NATS server answered.
    #[error("cannot connect to NATS at {url}: {cause} (start one with `nats-server -js`, or run `mofa worker --dev`)")]
    Connect {
        /// The URL tried (without credentials).
        url: String,
        /// Why, said once.
        cause: String,
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
    /// The drain did not finish within `drain_timeout_ms`; the worker stopped anyway.
    #[error("drain incomplete after drain_timeout_ms = {timeout_ms} ms: {unanswered} request(s) still running were not answered; {stage} did not finish (NATS connection: {connection})")]
    DrainIncomplete {
        /// `drain_timeout_ms`.
        timeout_ms: u128,
        /// Requests still running when the time was up.
        unanswered: usize,
        /// The first step that did not finish in time.
        stage: &'static str,
        /// The connection's state then.
        connection: String,
    },
}

/// A plugin file that was found but not served, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (compile error with position, invalid name, ...).
    pub error: String,
}

/// One served endpoint, the task reading its subscription and the task pulling its jobs.
struct Slot {
    endpoint: Arc<Endpoint>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    jobs: Option<JoinHandle<()>>,
}

/// What the worker's tasks share.
pub(crate) struct Shared {
    pub(crate) id: Arc<str>,
    pub(crate) client: Client,
    pub(crate) config: WorkerConfig,
    pub(crate) manager: Arc<PluginManager>,
    /// The Rhai engine and the wasmtime runtime, on one sandbox pool.
    pub(crate) engines: kinds::Engines,
    /// The durable jobs streams, when the server has JetStream and `jobs.enabled` is on.
    jobs: Option<Arc<crate::jobs::Jobs>>,
    /// Changes each time the connection is made again (a pending pull request is gone then).
    reconnects: watch::Receiver<u64>,
    endpoints: Mutex<BTreeMap<String, Slot>>,
    states: Mutex<HashMap<String, StateMap>>,
    /// Reload outcomes per plugin, for `$SRV.STATS` and the `mofa.reloads` metric.
    pub(crate) reloads: Arc<ReloadCounts>,
    /// The request duration histogram (the other metrics read the endpoints' counts).
    instruments: Arc<Instruments>,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The endpoints served right now.
    fn endpoint_list(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| s.endpoint.clone())
            .collect()
    }

    /// What `name` serves now, if anything.
    pub(crate) fn served(&self, name: &str) -> Option<(Arc<ManagedPlugin>, Option<Revision>)> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.get(name).map(|slot| {
            let served = slot.endpoint.served();
            (served.plugin.clone(), served.revision.clone())
        })
    }

    /// Serves a running plugin (and its canary, if any): a new endpoint, or an atomic swap on
    /// the existing one.
    pub(crate) async fn serve(&self, served: Served) -> Result<(), WorkerError> {
        let plugin = served.plugin.clone();
        let name = plugin.id().to_string();
        // Local calls from other plugins go to the stable revision.
        self.manager.adopt(plugin.clone());
        let existing = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .map(|slot| slot.endpoint.clone());
        if let Some(endpoint) = existing {
            // The replaced revision is dropped once its last in-flight request finishes.
            endpoint.swap(served);
            return Ok(());
        }
        let endpoint = Arc::new(Endpoint::new(
            served,
            self.client.clone(),
            &self.config,
            self.id.clone(),
            self.engines.engine.pool().clone(),
            self.instruments.clone(),
            self.reloads.clone(),
        ));
        let subject = endpoint.subject.clone();
        let requests = self
            .client
            .queue_subscribe(subject.clone(), QUEUE_GROUP.to_string())
            .await
            .map_err(|source| WorkerError::Subscribe {
                subject: subject.clone(),
                source,
            })?;
        // The server knows the subscription before anyone hears that the plugin serves.
        if let Err(e) = round_trip(&self.client).await {
            tracing::warn!(plugin = %name, error = %e, "no round trip to the server after subscribing");
        }
        let (stop, removed) = watch::channel(false);
        let jobs = self.jobs.clone().map(|queue| {
            tokio::spawn(jobs::consume(
                endpoint.clone(),
                queue,
                self.id.clone(),
                jobs::Signals {
                    shutdown: self.shutdown.clone(),
                    removed: removed.clone(),
                    reconnects: self.reconnects.clone(),
                },
                self.tracker.clone(),
            ))
        });
        let task = tokio::spawn(endpoint.clone().serve(
            requests,
            self.shutdown.clone(),
            removed,
            self.tracker.clone(),
        ));
        tracing::info!(plugin = %name, kind = %plugin.kind(), "serving on {subject}");
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name,
                Slot {
                    endpoint,
                    stop,
                    task,
                    jobs,
                },
            );
        Ok(())
    }

    /// Stops serving `name`: its subscription drains, the requests it took (running or
    /// queued) finish, then the plugin is stopped and unloaded. Returns whether it was served.
    pub(crate) async fn remove(&self, name: &str) -> bool {
        let slot = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let Some(slot) = slot else {
            return false;
        };
        let _ = slot.stop.send(true);
        let _ = slot.task.await;
        if let Some(jobs) = slot.jobs {
            let _ = jobs.await;
        }
        if let Err(e) = round_trip(&self.client).await {
            tracing::warn!(plugin = %name, error = %e, "no round trip to the server after unsubscribing");
        }
        // Every request it took, running or queued, finishes on the plugin before it stops.
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        if !slot.endpoint.idle_within(drain).await {
            tracing::warn!(plugin = %name, "requests still running after drain_timeout_ms; stopping it anyway");
        }
        if let Some(plugin) = self.manager.take(name) {
            let _ = plugin.transition(Lifecycle::Stop).await;
            let _ = plugin.transition(Lifecycle::Unload).await;
        }
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        tracing::info!(plugin = %name, "removed");
        true
    }

    /// Each served plugin's counts, for the metrics.
    fn snapshots(&self) -> Vec<PluginSnapshot> {
        self.endpoint_list().iter().map(|e| e.snapshot()).collect()
    }

    /// What building plugin `name` from code uses (see [`kinds::Runtimes`]).
    pub(crate) fn runtimes(&self, name: &str) -> kinds::Runtimes {
        self.engines.runtimes(self.state_for(name))
    }

    /// The state map a new Rhai revision of `name` starts with: the current one when
    /// `preserve_state` is on, else a fresh one.
    pub(crate) fn state_for(&self, name: &str) -> StateMap {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if self.config.reload.preserve_state {
            states.entry(name.to_string()).or_default().clone()
        } else {
            let fresh = StateMap::default();
            states.insert(name.to_string(), fresh.clone());
            fresh
        }
    }
}

/// A running worker.
pub struct Worker {
    shared: Arc<Shared>,
    failures: Vec<LoadFailure>,
    shutdown: watch::Sender<bool>,
    service: JoinHandle<()>,
    follower: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Worker {
    /// Starts a worker serving the built-in native plugins and the plugins directory.
    pub async fn start(config: WorkerConfig) -> Result<Worker, WorkerError> {
        let natives = crate::native::builtin(&config.database, &config.data_dir());
        Self::start_with(config, natives).await
    }

    /// Starts a worker serving `natives` (instead of the built-in ones) and the plugins
    /// directory. This is how an application embeds its own native plugins.
    ///
    /// The steps read as the worker's life: connect, build the engines, serve the local
    /// plugins, follow the plugins bucket, answer the Services API, and say it is ready.
    ///
    /// ```no_run
    /// # async fn embed() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use mofa_bus::config::WorkerConfig;
    /// use mofa_bus::worker::Worker;
    ///
    /// let config = WorkerConfig {
    ///     nats_url: "nats://127.0.0.1:4222".into(),
    ///     ..WorkerConfig::default()
    /// };
    /// // Your own native plugins (see `mofa_bus::plugin::AgentPlugin`), beside the plugins
    /// // directory's scripts and modules and whatever is published to the bus.
    /// let natives: Vec<Arc<dyn mofa_bus::plugin::AgentPlugin>> = Vec::new();
    /// let worker = Worker::start_with(config, natives).await?;
    /// tokio::signal::ctrl_c().await?;
    /// worker.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with(
        config: WorkerConfig,
        natives: Vec<Arc<dyn AgentPlugin>>,
    ) -> Result<Worker, WorkerError> {
        config.validate()?;
        // The keys revisions are verified against (see `worker::follower`), checked before
        // anything starts.
        crate::distribution::signature::check_public_keys(&config.reload.trusted_keys)
            .map_err(|e| WorkerError::Config(ConfigError::Invalid(e)))?;
        let id: Arc<str> = config
            .worker_id
            .clone()
            .unwrap_or_else(|| nuid::next().as_str().to_string())
            .into();
        let (client, reconnects) = connect(&config, &id).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
        let shared = Shared::new(config, id, client, reconnects, shutdown_rx).await?;
        observe(&shared);
        let failures = serve_local(&shared, natives).await?;
        // The bucket's revisions first: a worker answers the Services API (and says it is
        // ready) only once it serves what the bucket says.
        let follower = if shared.config.reload.enabled {
            follower::start(shared.clone()).await
        } else {
            None
        };
        let service = answer_services_api(&shared).await;
        // Make sure every subscription is registered with the server before reporting ready.
        round_trip(&shared.client)
            .await
            .map_err(WorkerError::Flush)?;
        tracing::info!(worker = %shared.id, url = %shared.config.nats_url, "worker ready");
        Ok(Worker {
            shared,
            failures,
            shutdown,
            service,
            follower,
            drain_timeout,
        })
    }

    /// This worker's id (also its Services API instance id).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The plugin manager.
    pub fn manager(&self) -> &Arc<PluginManager> {
        &self.shared.manager
    }

    /// Plugin files found but not served.
    pub fn load_failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The worker's NATS connection.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The revision number served for `plugin`, if it came from the plugins bucket.
    pub fn serving_revision(&self, plugin: &str) -> Option<u64> {
        self.shared
            .served(plugin)
            .and_then(|(_, revision)| revision.map(|r| r.number))
    }

    /// Drains and stops: stop taking requests, answer every in-flight one, flush, close, all
    /// within `drain_timeout_ms` whatever the state of the connection. Past it, the worker stops
    /// anyway and says what was left ([`WorkerError::DrainIncomplete`]).
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        let shared = self.shared;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        tracing::info!(worker = %shared.id, "draining");
        // Requests still running or not yet answered: they need the connection back.
        let busy = !shared.tracker.is_empty();
        let _ = self.shutdown.send(true);
        if let Some(follower) = self.follower {
            follower.abort();
            let _ = follower.await;
        }
        let slots: Vec<Slot> =
            std::mem::take(&mut *shared.endpoints.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        let mut late = None;
        // Each endpoint unsubscribes and answers what the server had already routed to it;
        // each jobs task stops pulling and gives back what it had not started.
        for slot in slots {
            let tasks = std::iter::once(slot.task).chain(slot.jobs);
            for task in tasks {
                let abort = task.abort_handle();
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    abort.abort();
                    late.get_or_insert("unsubscribing the endpoints");
                }
            }
        }
        // The server has taken every unsubscription in before the worker says it has stopped
        // serving: a request sent after that goes to another worker. Without a server there is
        // no one to ask, and nothing is routed here: stop waiting once the connection is lost.
        let confirmed = async {
            tokio::select! {
                _ = round_trip(&shared.client) => {}
                () = shutdown::disconnected(&shared.client) => {}
            }
        };
        if tokio::time::timeout_at(deadline, confirmed).await.is_err() {
            late.get_or_insert("unsubscribing the endpoints");
        }
        let service = self.service.abort_handle();
        if tokio::time::timeout_at(deadline, self.service)
            .await
            .is_err()
        {
            service.abort();
        }
        let busy = busy || !shared.tracker.is_empty();
        shared.tracker.close();
        if tokio::time::timeout_at(deadline, shared.tracker.wait())
            .await
            .is_err()
        {
            late.get_or_insert("answering the requests in flight");
        }
        let unanswered = shared.tracker.len();
        let stop_plugins = async {
            for plugin in shared.manager.plugins() {
                let _ = plugin.transition(Lifecycle::Stop).await;
                let _ = plugin.transition(Lifecycle::Unload).await;
            }
        };
        if tokio::time::timeout_at(deadline, stop_plugins)
            .await
            .is_err()
        {
            late.get_or_insert("stopping the plugins");
        }
        // Replies and events go out before the worker exits. With nothing answered during
        // the drain, a lost server leaves nothing to wait for.
        let flushed = if busy {
            flush(&shared.client, deadline, &mut late).await
        } else {
            tokio::select! {
                flushed = flush(&shared.client, deadline, &mut late) => flushed,
                () = shutdown::disconnected(&shared.client) => Ok(()),
            }
        };
        if let Some(stage) = late {
            let error = WorkerError::DrainIncomplete {
                timeout_ms: self.drain_timeout.as_millis(),
                unanswered,
                stage,
                connection: format!("{:?}", shared.client.connection_state()).to_lowercase(),
            };
            tracing::warn!(worker = %shared.id, "{error}");
            return Err(error);
        }
        tracing::info!(worker = %shared.id, "stopped");
        flushed
    }
}

/// Connects as worker `id`, logging the connection's life (lost, back, refused) with the
/// server's URL; the receiver counts (re)connections, for the tasks whose server-side state a
/// reconnection loses.
async fn connect(
    config: &WorkerConfig,
    id: &str,
) -> Result<(Client, watch::Receiver<u64>), WorkerError> {
    let (reconnects_tx, reconnects) = watch::channel(0u64);
    let reconnects_tx = Arc::new(reconnects_tx);
    let servers = crate::connection::servers(&config.nats_url)?;
    let url: Arc<str> = crate::connection::shown(&config.nats_url).into();
    let announced = url.clone();
    let client = config
        .nats
        .clone()
        .with_url_credentials(&config.nats_url)
        .options()
        .await?
        .name(format!("mofa-worker {id}"))
        // Room for a burst between the socket and the admission loop (which moves requests
        // on into the plugins' bounded queues at once); the channel grows only when used.
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let reconnects = reconnects_tx.clone();
            let url = announced.clone();
            async move {
                match event {
                    // Messages dropped before admission: their callers will time out.
                    async_nats::Event::SlowConsumer(sid) => tracing::error!(
                        subscription = sid,
                        "slow consumer: NATS messages were dropped before admission"
                    ),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the connection to NATS at {url}; reconnecting")
                    }
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS at {url}");
                        reconnects.send_modify(|n| *n += 1);
                    }
                    // Permission violations and the like: the server refused something.
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(error = %e, "the NATS server reported an error")
                    }
                    other => tracing::debug!(event = %other, "NATS connection event"),
                }
            }
        })
        .connect(servers.as_slice())
        .await
        .map_err(|e| WorkerError::Connect {
            url: url.to_string(),
            cause: crate::connection::cause(&e),
        })?;
    Ok((client, reconnects))
}

impl Shared {
    /// What the worker's tasks share: the engines (a module's output capped at what the
    /// server can carry as a reply), `call_plugin` over this worker and the bus, and the
    /// durable jobs streams.
    async fn new(
        config: WorkerConfig,
        id: Arc<str>,
        client: Client,
        reconnects: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Shared>, WorkerError> {
        let manager = Arc::new(PluginManager::new());
        let mut wasm_config = config.wasm.clone();
        let max_payload = client.server_info().max_payload as u64;
        if max_payload > 0 && wasm_config.max_output_bytes > max_payload {
            tracing::info!(
                max_output_bytes = wasm_config.max_output_bytes,
                max_payload,
                "wasm.max_output_bytes capped at the server's max_payload"
            );
            wasm_config.max_output_bytes = max_payload;
        }
        let disk_cache = config
            .wasm
            .disk_cache
            .then(|| config.data_dir().join("wasm-cache"));
        let engines = kinds::Engines::new(
            config.rhai.clone(),
            wasm_config,
            config.sandbox_threads,
            disk_cache,
        )?;
        engines.set_caller(caller::new(
            &manager,
            client.clone(),
            Duration::from_millis(config.wasm.timeout_ms),
            config.reload.namespace(),
        ));
        let jobs = if !config.jobs.enabled {
            None
        } else if config.reload.env != crate::config::PRODUCTION {
            tracing::info!(env = %config.reload.env, "durable jobs (mofa.jobs.<plugin>) are served in the production environment only");
            None
        } else {
            open_jobs(&client, &config.jobs).await
        };
        Ok(Arc::new(Shared {
            id,
            client,
            config,
            manager,
            engines,
            jobs,
            reconnects,
            endpoints: Mutex::new(BTreeMap::new()),
            states: Mutex::new(HashMap::new()),
            reloads: Arc::default(),
            instruments: Arc::new(Instruments::new()),
            tracker: TaskTracker::new(),
            shutdown,
        }))
    }
}

/// Hands the worker's counts to the metrics exporter (read when it exports).
fn observe(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let pool = shared.engines.engine.pool().clone();
    crate::telemetry::observe(
        &shared.id,
        crate::telemetry::Sources {
            plugins: Box::new(move || weak.upgrade().map(|s| s.snapshots()).unwrap_or_default()),
            sandbox_queue: Box::new(move || pool.queued() as u64),
            reloads: shared.reloads.clone(),
        },
    );
}

/// Serves the native plugins and the plugins directory's files; what cannot be served (a file
/// that does not build, a name two plugins claim) is reported in the failures returned.
async fn serve_local(
    shared: &Shared,
    natives: Vec<Arc<dyn AgentPlugin>>,
) -> Result<Vec<LoadFailure>, WorkerError> {
    let mut failures = Vec::new();
    let files = plugin_files(shared, &mut failures).await;
    // Where each served name comes from, to name both sides when two claim one name.
    let mut sources: HashMap<String, String> = HashMap::new();
    let candidates = natives
        .into_iter()
        .map(|plugin| {
            let source = format!("the native plugin {}", plugin.metadata().id);
            (plugin, source, None)
        })
        .chain(
            files
                .into_iter()
                .map(|(plugin, path)| (plugin, path.display().to_string(), Some(path))),
        );
    for (plugin, source, path) in candidates {
        let id = plugin.metadata().id.clone();
        let failure_path = || path.clone().unwrap_or_else(|| PathBuf::from(&id));
        if let Some(first) = sources.get(&id) {
            let error = format!(
                "plugin name {id:?} is taken by {first}, so {source} is not served (rename one of them)"
            );
            tracing::error!(plugin = %id, "{error}");
            failures.push(LoadFailure {
                path: failure_path(),
                error,
            });
            continue;
        }
        let managed = match shared.manager.register(plugin) {
            Ok(managed) => managed,
            Err(e) => {
                failures.push(LoadFailure {
                    path: failure_path(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        sources.insert(id.clone(), source);
        match managed.activate().await {
            Ok(()) => shared.serve(Served::new(managed, None)).await?,
            Err(e) => {
                tracing::error!(plugin = %id, error = %e, "plugin not served");
                failures.push(LoadFailure {
                    path: failure_path(),
                    error: e.to_string(),
                });
            }
        }
    }
    Ok(failures)
}

/// Answers the NATS Services API (`$SRV.PING/INFO/STATS`) until shutdown; without it the
/// worker still serves (logged).
async fn answer_services_api(shared: &Arc<Shared>) -> JoinHandle<()> {
    let info = Arc::new(service::ServiceInfo {
        id: shared.id.to_string(),
        service: shared.config.reload.namespace().service_name().to_string(),
        env: shared.config.reload.env.clone(),
        endpoints: Box::new({
            let shared = Arc::downgrade(shared);
            move || {
                shared
                    .upgrade()
                    .map(|s| s.endpoint_list())
                    .unwrap_or_default()
            }
        }),
        reloads: shared.reloads.clone(),
    });
    match service::subscribe(shared.client.clone(), info, shared.shutdown.clone()).await {
        Ok(answering) => tokio::spawn(answering),
        Err(e) => {
            tracing::error!(error = %e, "services API not available");
            tokio::spawn(async {})
        }
    }
}

/// Flushes `client` by `deadline`; past it, notes the stage in `late`.
async fn flush(
    client: &Client,
    deadline: tokio::time::Instant,
    late: &mut Option<&'static str>,
) -> Result<(), WorkerError> {
    match tokio::time::timeout_at(deadline, client.flush()).await {
        Ok(flushed) => flushed.map_err(|e| WorkerError::Flush(e.to_string())),
        Err(_) => {
            late.get_or_insert("flushing replies and events to NATS");
            Ok(())
        }
    }
}

/// The durable jobs streams. With JetStream on, an attempt that fails (workers of a fresh
/// cluster all creating the streams at once can time one out) is tried twice more; streams
/// this credential may not create (`mofa setup` has not run) are not waited for.
async fn open_jobs(
    client: &Client,
    config: &crate::jobs::JobsConfig,
) -> Option<Arc<crate::jobs::Jobs>> {
    let attempts = if client.server_info().jetstream { 3 } else { 1 };
    for attempt in 1..=attempts {
        match crate::jobs::Jobs::open(client.clone(), config).await {
            Ok(jobs) => return Some(Arc::new(jobs)),
            Err(crate::jobs::JobsError::Server(why)) => {
                tracing::warn!("{why}; durable jobs (mofa.jobs.<plugin>) are not served");
                return None;
            }
            Err(crate::jobs::JobsError::Provision(why)) => {
                tracing::warn!("{why}; until then durable jobs (mofa.jobs.<plugin>) are not served by this worker (restart it after `mofa setup`), request/reply is");
                return None;
            }
            Err(e) if attempt == attempts => {
                tracing::warn!(error = %e, "durable jobs (mofa.jobs.<plugin>) not served");
            }
            Err(e) => {
                tracing::info!(error = %e, attempt, "opening the durable jobs streams again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

/// Every plugin file in the plugins directory (and the kinds' subdirectories of it, see
/// [`crate::kinds`]) as a plugin, with its path; files that cannot become plugins are reported in
/// `failures` and skipped. A missing directory is not an error: the native plugins (and the
/// bucket's) are still served.
async fn plugin_files(
    shared: &Shared,
    failures: &mut Vec<LoadFailure>,
) -> Vec<(Arc<dyn AgentPlugin>, PathBuf)> {
    let dir: &Path = &shared.config.plugins_dir;
    if !dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "plugins directory not readable; serving native and published plugins only");
        return Vec::new();
    }
    let mut plugins = Vec::new();
    for path in kinds::code_files(dir) {
        let plugin = match kinds::read(&path) {
            Ok((kind, code)) => {
                let runtimes = shared.runtimes(&code.name);
                kinds::build(kind, code, runtimes).await
            }
            Err(e) => Err(e),
        };
        match plugin {
            Ok(plugin) => plugins.push((plugin, path)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "plugin skipped");
                failures.push(LoadFailure {
                    path,
                    error: e.to_string(),
                });
            }
        }
    }
    plugins
}
