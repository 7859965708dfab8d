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

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::Shared;
use crate::distribution::{
    signature, Distribution, PluginRecord, ReloadEvent, ReloadStatus, Revision, Stored,
};
use crate::kinds::{self, Code};
use crate::plugin::{ManagedPlugin, PluginError};
use crate::subjects;
use crate::wire;

/// How long a starting worker waits for the bucket's current values.
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the bucket, applies its current contents, and spawns the follower. Without
/// JetStream the worker serves its local plugins only (logged).
pub(crate) async fn start(shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    let distribution = match Distribution::open(shared.client.clone(), &shared.config.reload).await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "hot reload over the bus is off");
            return None;
        }
    };
    let mut watch = match distribution.kv().watch_with_history(">").await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the plugins bucket; hot reload is off");
            return None;
        }
    };
    let has_keys = match distribution.kv().keys().await {
        Ok(mut keys) => keys.next().await.is_some(),
        Err(_) => true,
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
    };
    if has_keys {
        let started = Instant::now();
        while started.elapsed() < INITIAL_SYNC_TIMEOUT {
            match tokio::time::timeout(INITIAL_SYNC_TIMEOUT, watch.next()).await {
                Ok(Some(Ok(entry))) => {
                    let caught_up = entry.delta == 0;
                    follower.apply(entry).await;
                    if caught_up {
                        break;
                    }
                }
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "plugins bucket watch error"),
                Ok(None) | Err(_) => break,
            }
        }
    }
    Some(tokio::spawn(async move {
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(entry) => follower.apply(entry).await,
                Err(e) => tracing::warn!(error = %e, "plugins bucket watch error"),
            }
        }
        tracing::warn!("plugins bucket watch ended; hot reload stopped");
    }))
}

struct Follower {
    shared: Arc<Shared>,
    distribution: Distribution,
}

/// `key` as one subject token: a bucket key that is not a plugin name may hold `.` (or other
/// characters a plugin name may not), which would change the event's subject.
fn subject_token(key: &str) -> std::borrow::Cow<'_, str> {
    if subjects::validate_name(key).is_ok() {
        return key.into();
    }
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .into()
}

/// A failed load, and whether trying again could help.
struct LoadError {
    error: PluginError,
    transient: bool,
}

impl Follower {
    async fn apply(&self, entry: Entry) {
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
        let served = match loaded {
            Ok(plugin) => self
                .shared
                .serve(plugin, Some(revision))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
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
                    .serve(plugin, Some(revision.clone()))
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
            origin: format!("{name} ({} from the plugins bucket)", record.kind),
        };
        let runtimes = self.shared.runtimes(name);
        let plugin = tokio::task::spawn_blocking(move || (kind.build)(code, runtimes))
            .await
            .unwrap_or_else(|e| Err(PluginError::Load(format!("build task failed: {e}"))))
            .map_err(fatal)?;
        if plugin.metadata().id != name {
            return Err(fatal(PluginError::Load(format!(
                "bucket key {name:?} holds a plugin named {:?}; `mofa publish` keys a tool by its \
                 tool name",
                plugin.metadata().id
            ))));
        }
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
        use crate::telemetry::ReloadOutcome;
        let outcome = match status {
            ReloadStatus::Completed => Some(ReloadOutcome::Completed),
            ReloadStatus::Failed => Some(ReloadOutcome::Failed),
            ReloadStatus::RolledBack => Some(ReloadOutcome::RolledBack),
            ReloadStatus::Started | ReloadStatus::Removed => None,
        };
        if let Some(outcome) = outcome {
            self.shared.reloads.record(plugin, outcome);
        }
        let mut event = ReloadEvent {
            event: "reload".to_string(),
            status,
            plugin: plugin.to_string(),
            worker: self.shared.id.to_string(),
            revision,
            sha256: String::new(),
            kind: None,
            version: None,
            duration_us: None,
            error: None,
            timestamp_ms: wire::unix_ms(),
        };
        fill(&mut event);
        match wire::encode_named(&event) {
            Ok(body) => {
                if let Err(e) = self
                    .shared
                    .client
                    .publish(subjects::reload_event(&subject_token(plugin)), body)
                    .await
                {
                    tracing::warn!(plugin, error = %e, "reload event not sent");
                }
            }
            Err(e) => tracing::warn!(plugin, error = %e, "reload event not encoded"),
        }
    }
}
