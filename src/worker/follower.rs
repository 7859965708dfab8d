//! The worker's bucket follower: hot reload by following the plugins bucket and serving what
//! it says.
//!
//! At start the worker reads the current value of every key (a watch *with history*: a plain
//! watch only sees later updates) and applies them before it reports ready, so a worker that
//! joins late serves the current revisions at once. It then follows updates. A new revision is
//! compiled and loaded beside the one serving and swapped in only when it loads cleanly;
//! requests in flight finish on the revision they started on. A revision that fails to load is
//! rejected and the previous one keeps serving. A deleted key removes the endpoint. Every step
//! is announced on `mofa.events.reload.<plugin>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Entry, Operation};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::canary::CanaryRoute;
use super::endpoint::Served;
use super::events::announce;
use super::Shared;
use crate::distribution::{
    signature, Canary, Distribution, PluginRecord, ReloadEvent, ReloadStatus, Revision, Stored,
};
use crate::kinds::{self, Code};
use crate::plugin::{ManagedPlugin, PluginError};
use crate::subjects;

/// How long a starting worker waits for the bucket's current values.
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one attempt to watch the bucket again may take.
const WATCH_ATTEMPT: Duration = Duration::from_secs(1);

/// How often a worker whose bucket could not be opened tries again.
const OPEN_RETRY: Duration = Duration::from_secs(2);

/// Opens the bucket, applies its current contents, and spawns the follower. Without
/// JetStream (or on a server older than 2.10) the worker serves its local plugins only (logged). With JetStream but no bucket
/// it may open (a least-privilege worker may not create it, and no publisher has yet), the
/// worker serves its local plugins and tries again every few seconds in the background.
pub(crate) async fn start(shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    if let Err(why) = crate::connection::require_jetstream(&shared.client, "hot reload") {
        tracing::warn!("{why}; serving local plugins only, hot reload over the bus is off");
        return None;
    }
    let (distribution, mut watch) = match open(&shared).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot open the plugins bucket yet; serving local plugins and retrying every {} s",
                OPEN_RETRY.as_secs()
            );
            return Some(tokio::spawn(async move {
                let js = async_nats::jetstream::new(shared.client.clone());
                let stream = format!("KV_{}", shared.config.reload.kv_bucket());
                loop {
                    tokio::time::sleep(OPEN_RETRY).await;
                    // Looked up first: trying to create it again (which this credential may
                    // not) would wait out a timeout and log a refusal every time.
                    if !matches!(crate::provision::exists(&js, &stream).await, Ok(true)) {
                        continue;
                    }
                    if let Ok((distribution, mut watch)) = open(&shared).await {
                        tracing::info!("plugins bucket opened; hot reload is on");
                        let follower = Follower {
                            shared,
                            distribution,
                            seen: Default::default(),
                        };
                        follower.sync(&mut watch).await;
                        follower.follow(watch).await;
                        return;
                    }
                }
            }));
        }
    };
    if shared.config.reload.trusted_keys.is_empty() {
        tracing::warn!(
            bucket = %shared.config.reload.bucket,
            "hot reload accepts unsigned revisions: whoever can write the bucket runs code on this worker (set reload.trusted_keys and publish with --sign)"
        );
    }
    let follower = Follower {
        shared,
        distribution,
        seen: Default::default(),
    };
    // The bucket's current revisions serve before the worker says it is ready.
    follower.sync(&mut watch).await;
    Some(tokio::spawn(follower.follow(watch)))
}

/// The plugins bucket and a watch of it from its first revisions.
async fn open(shared: &Shared) -> Result<(Distribution, kv::Watch), String> {
    let distribution = Distribution::open(shared.client.clone(), &shared.config.reload)
        .await
        .map_err(|e| e.to_string())?;
    let watch = distribution
        .kv()
        .watch_with_history(">")
        .await
        .map_err(|e| format!("cannot watch the plugins bucket: {e}"))?;
    Ok((distribution, watch))
}

impl Follower {
    /// Applies the bucket's current value of every key.
    async fn sync(&self, watch: &mut kv::Watch) {
        let has_keys = match self.distribution.kv().keys().await {
            Ok(mut keys) => keys.next().await.is_some(),
            Err(_) => true,
        };
        if !has_keys {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < INITIAL_SYNC_TIMEOUT {
            match tokio::time::timeout(INITIAL_SYNC_TIMEOUT, watch.next()).await {
                Ok(Some(Ok(entry))) => {
                    let caught_up = entry.delta == 0;
                    self.apply(entry).await;
                    if caught_up {
                        break;
                    }
                }
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "plugins bucket watch error"),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Applies every later revision, for as long as the worker runs. The watch is made again
    /// from the last revision seen when the connection comes back (the watch's consumer may
    /// have lived on a server that is gone) or when it reports an error (missed heartbeats:
    /// its server died while this connection stayed up), rather than waiting for the
    /// client's own, slower, recovery.
    async fn follow(self, mut watch: kv::Watch) {
        let mut reconnects = self.shared.reconnects.clone();
        reconnects.borrow_and_update();
        loop {
            let why = tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        self.apply(entry).await;
                        continue;
                    }
                    Some(Err(e)) => format!("the watch reported: {e}"),
                    None => "the watch ended".to_string(),
                },
                changed = reconnects.changed() => match changed {
                    Ok(()) => "the connection was made again".to_string(),
                    Err(_) => return,
                },
            };
            watch = self.watch_again(&why).await;
        }
    }

    /// A watch from the revision after the last one seen, retried until it is made.
    async fn watch_again(&self, why: &str) -> kv::Watch {
        let from = self.seen.load(std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(
            from_revision = from,
            "watching the plugins bucket again: {why}"
        );
        let mut pause = Duration::from_millis(100);
        loop {
            // Short attempts: while the cluster elects the bucket's new leader, a request
            // gets no answer at all, and the client's own timeout is 5 s.
            let attempt = self.distribution.kv().watch_from_revision(">", from);
            match tokio::time::timeout(WATCH_ATTEMPT, attempt).await {
                Ok(Ok(watch)) => return watch,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot watch the plugins bucket yet; trying again")
                }
                Err(_) => tracing::debug!("no answer to the watch request yet; trying again"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

struct Follower {
    shared: Arc<Shared>,
    distribution: Distribution,
    /// The bucket revision (stream sequence) of the last entry applied.
    seen: std::sync::atomic::AtomicU64,
}

/// A failed load, and whether trying again could help.
struct LoadError {
    error: PluginError,
    transient: bool,
}

impl Follower {
    async fn apply(&self, entry: Entry) {
        self.seen
            .fetch_max(entry.revision, std::sync::atomic::Ordering::Relaxed);
        let name = entry.key.clone();
        if let Err(e) = subjects::validate_name(&name) {
            tracing::warn!(key = %name, error = %e, "ignoring a bucket key that is not a plugin name");
            self.event(&name, ReloadStatus::Failed, entry.revision, |ev| {
                ev.error = Some(format!(
                    "bucket key {name:?} is not a plugin name ({e}); nothing is served for it"
                ))
            })
            .await;
            return;
        }
        match entry.operation {
            Operation::Put => self.reload(&name, entry).await,
            Operation::Delete | Operation::Purge => {
                let previous = self.shared.served(&name).and_then(|(_, r)| r);
                if self.shared.remove(&name).await {
                    self.event(&name, ReloadStatus::Removed, entry.revision, |e| {
                        e.sha256 = previous.map(|r| r.sha256).unwrap_or_default();
                    })
                    .await;
                }
            }
        }
    }

    async fn reload(&self, name: &str, entry: Entry) {
        let serving = self.shared.served(name).and_then(|(_, r)| r);
        if serving.as_ref().is_some_and(|r| r.number >= entry.revision) {
            return; // already serving this (or a later) revision
        }
        let record = match PluginRecord::decode(&entry.value) {
            Ok(record) => record,
            Err(e) => {
                self.event(name, ReloadStatus::Failed, entry.revision, |ev| {
                    ev.error = Some(e.clone())
                })
                .await;
                self.kept(name, serving, entry.revision).await;
                return;
            }
        };
        let revision = Revision {
            number: entry.revision,
            sha256: record.sha256.clone(),
            version: record.version.clone(),
        };
        let describe = |ev: &mut ReloadEvent| {
            ev.sha256 = record.sha256.clone();
            ev.kind = Some(record.kind.as_str().to_string());
            ev.version = Some(record.version.clone());
            ev.canary_of = record.canary.as_ref().map(|c| c.stable);
        };
        self.event(name, ReloadStatus::Started, entry.revision, describe)
            .await;
        let started = Instant::now();
        let attempts = self.shared.config.reload.max_attempts;
        let mut backoff = Duration::from_millis(self.shared.config.reload.retry_backoff_ms);
        let mut attempt = 1;
        let loaded = loop {
            match self.load(name, &record).await {
                Ok(plugin) => break Ok(plugin),
                Err(e) if e.transient && attempt < attempts => {
                    tracing::warn!(plugin = %name, attempt, error = %e.error, "reload attempt failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => break Err(e.error),
            }
        };
        let duration_us = Some(started.elapsed().as_micros() as u64);
        let served = match (loaded, &record.canary) {
            (Ok(plugin), None) => self
                .shared
                .serve(Served::new(plugin, Some(revision)))
                .await
                .map_err(|e| e.to_string()),
            (Ok(plugin), Some(canary)) => self.serve_canary(name, plugin, revision, canary).await,
            (Err(e), _) => Err(e.to_string()),
        };
        match served {
            Ok(()) => {
                tracing::info!(plugin = %name, revision = entry.revision, "reloaded");
                self.event(name, ReloadStatus::Completed, entry.revision, |ev| {
                    describe(ev);
                    ev.duration_us = duration_us;
                })
                .await;
            }
            Err(error) => {
                tracing::warn!(plugin = %name, revision = entry.revision, %error, "revision rejected");
                self.event(name, ReloadStatus::Failed, entry.revision, |ev| {
                    describe(ev);
                    ev.duration_us = duration_us;
                    ev.error = Some(error);
                })
                .await;
                self.kept(name, serving, entry.revision).await;
            }
        }
    }

    /// After a rejected revision: say which revision keeps serving. A worker that serves no
    /// revision yet (it started after the broken one was published) falls back to the newest
    /// stored revision that loads, so it serves what the rest of the fleet serves.
    async fn kept(&self, name: &str, serving: Option<Revision>, rejected: u64) {
        let serving = match serving {
            Some(serving) => Some(serving),
            None => self.fallback(name, rejected).await,
        };
        if let Some(serving) = serving {
            self.event(name, ReloadStatus::RolledBack, serving.number, |ev| {
                ev.sha256 = serving.sha256.clone();
                ev.version = Some(serving.version.clone());
            })
            .await;
        }
    }

    /// Serves the newest revision of `name` older than `rejected` that loads (not reaching back
    /// past a delete).
    async fn fallback(&self, name: &str, rejected: u64) -> Option<Revision> {
        let history = match self.distribution.history(name).await {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(plugin = %name, error = %e, "cannot read history for a fallback");
                return None;
            }
        };
        for (number, stored) in history.into_iter().rev().filter(|(n, _)| *n < rejected) {
            let record = match stored {
                Stored::Record(record) => record,
                Stored::Deleted => return None, // nothing older counts
                Stored::Unreadable(e) => {
                    tracing::warn!(plugin = %name, revision = number, error = %e, "skipping a stored revision that is not a plugin record");
                    continue;
                }
            };
            if let Ok(plugin) = self.load(name, &record).await {
                let revision = Revision {
                    number,
                    sha256: record.sha256.clone(),
                    version: record.version.clone(),
                };
                if self
                    .shared
                    .serve(Served::new(plugin, Some(revision.clone())))
                    .await
                    .is_ok()
                {
                    tracing::info!(plugin = %name, revision = number, "serving the newest revision that loads");
                    return Some(revision);
                }
            }
        }
        None
    }

    /// Serves `plugin` (at `revision`) as a canary beside the stable revision the record names:
    /// the one serving now when it is that revision, else that revision from the bucket's
    /// history (a worker that starts while a canary runs).
    async fn serve_canary(
        &self,
        name: &str,
        plugin: Arc<ManagedPlugin>,
        revision: Revision,
        canary: &Canary,
    ) -> Result<(), String> {
        let stable = match self.shared.served(name) {
            Some((serving, Some(serving_revision))) if serving_revision.number == canary.stable => {
                Served::new(serving, Some(serving_revision))
            }
            _ => {
                let unusable = |e: String| {
                    format!(
                        "the canary's stable revision {} cannot serve: {e}",
                        canary.stable
                    )
                };
                let record = self
                    .distribution
                    .revision(name, canary.stable)
                    .await
                    .map_err(|e| unusable(e.to_string()))?;
                let stable = self
                    .load(name, &record)
                    .await
                    .map_err(|e| unusable(e.error.to_string()))?;
                let number = canary.stable;
                Served::new(
                    stable,
                    Some(Revision {
                        number,
                        sha256: record.sha256,
                        version: record.version,
                    }),
                )
            }
        };
        let served = stable.with_canary(
            Served::new(plugin, Some(revision)),
            CanaryRoute::new(canary),
        );
        self.shared.serve(served).await.map_err(|e| e.to_string())
    }

    /// Builds and starts the plugin a record describes, beside whatever serves now.
    async fn load(
        &self,
        name: &str,
        record: &PluginRecord,
    ) -> Result<Arc<ManagedPlugin>, LoadError> {
        let fatal = |error: PluginError| LoadError {
            error,
            transient: false,
        };
        let trusted = &self.shared.config.reload.trusted_keys;
        if !trusted.is_empty() {
            signature::verify(name, record, trusted).map_err(|e| fatal(PluginError::Load(e)))?;
        }
        let kind = kinds::of(record.kind).ok_or_else(|| {
            fatal(PluginError::Load(format!(
                "{} plugins cannot be distributed over the bus",
                record.kind
            )))
        })?;
        let body = self
            .distribution
            .code(record)
            .await
            .map_err(|e| LoadError {
                error: PluginError::Load(e.to_string()),
                transient: true,
            })?;
        let code = Code {
            name: name.to_string(),
            body,
            sidecar: record.manifest.clone(),
            version: Some(record.version.clone()),
            // Messages read `discount.rhai:3:7: ...`: the file the revision was published from.
            origin: format!("{name}.{}", kind.extension),
        };
        let runtimes = self.shared.runtimes(name);
        let plugin = kinds::build(kind, code, runtimes).await.map_err(fatal)?;
        kinds::check_built_name(name, &plugin.metadata().id).map_err(fatal)?;
        let managed = Arc::new(ManagedPlugin::new(plugin));
        managed.activate().await.map_err(fatal)?;
        Ok(managed)
    }

    async fn event(
        &self,
        plugin: &str,
        status: ReloadStatus,
        revision: u64,
        fill: impl FnOnce(&mut ReloadEvent),
    ) {
        let mut event = ReloadEvent::new(status, plugin, &self.shared.id, revision);
        fill(&mut event);
        let namespace = self.shared.config.reload.namespace();
        announce(&self.shared.client, &self.shared.reloads, &namespace, event).await;
    }
}
