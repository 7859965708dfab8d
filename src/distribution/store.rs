//! The publishing side of distribution: the plugins bucket and the module object store.

use std::path::Path;

use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::config::ReloadConfig;
use super::record::{sha256_hex, Canary, PluginRecord};
use crate::kinds;
use crate::provision::{self, ProvisionError, Provisioned};
use crate::subjects;
use crate::wire;

/// Why a distribution operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// JetStream is not available or the bucket cannot be opened or created.
    #[error("JetStream bucket {bucket}: {message} (hot reload needs nats-server 2.10 or newer running with JetStream, `nats-server -js`)")]
    Bucket {
        /// Bucket name.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// A file cannot be published.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bucket operation failed.
    #[error("{0}")]
    Operation(String),
    /// The plugin has no revision in the bucket (never published, or removed) for an
    /// operation that needs one.
    #[error("{plugin} is not published in the {bucket} bucket: nothing to {action} (`mofa publish FILE` publishes a plugin; `mofa plugins` lists what the workers serve)")]
    NotPublished {
        /// The plugin.
        plugin: String,
        /// The bucket.
        bucket: String,
        /// What was asked: `remove`, `roll back`, `list`.
        action: &'static str,
    },
    /// The server cannot hold buckets (too old, or JetStream off): which, and the fix.
    #[error("{0}")]
    Server(String),
    /// A bucket is missing and this credential may not create it.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

fn op(context: &str) -> impl Fn(String) -> DistributionError + '_ {
    move |e| DistributionError::Operation(format!("{context}: {e}"))
}

/// One stored revision of a plugin's key.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A plugin record.
    Record(Box<PluginRecord>),
    /// The key was deleted here.
    Deleted,
    /// The value is not a plugin record (written by something else than `mofa publish`).
    Unreadable(String),
}

impl Stored {
    /// The record, if this revision holds a readable one.
    pub fn record(&self) -> Option<&PluginRecord> {
        match self {
            Stored::Record(record) => Some(record.as_ref()),
            Stored::Deleted | Stored::Unreadable(_) => None,
        }
    }
}

/// Handle on the plugins bucket and the module object store.
#[derive(Clone)]
pub struct Distribution {
    kv: kv::Store,
    objects: object_store::ObjectStore,
    object_bucket: String,
    /// The environment whose bucket this is.
    env: String,
    /// Signs every record this handle puts (`mofa publish --sign`).
    signer: Option<std::sync::Arc<nkeys::KeyPair>>,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("object_bucket", &self.object_bucket)
            .finish()
    }
}

impl Distribution {
    /// Opens both buckets, creating what does not exist yet where this connection may (see
    /// [`crate::provision`]).
    pub async fn open(
        client: async_nats::Client,
        config: &ReloadConfig,
    ) -> Result<Distribution, DistributionError> {
        Ok(Self::provision(client, config).await?.0)
    }

    /// [`Distribution::open`], saying for each bucket whether it was created or found (`mofa
    /// setup`).
    pub async fn provision(
        client: async_nats::Client,
        config: &ReloadConfig,
    ) -> Result<(Distribution, Vec<Provisioned>), DistributionError> {
        crate::connection::require_jetstream(&client, "hot reload")
            .map_err(DistributionError::Server)?;
        let js = jetstream::new(client);
        let bucket_error = |bucket: &str, e: String| DistributionError::Bucket {
            bucket: bucket.to_string(),
            message: e,
        };
        let bucket = config.kv_bucket();
        let plugins = kv::Config {
            bucket: bucket.clone(),
            description: format!(
                "mofa-bus plugins of the {} environment: one key per plugin, history for rollback",
                config.env
            ),
            history: config.history,
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let modules = object_store::Config {
            bucket: config.object_bucket.clone(),
            description: Some("mofa-bus modules too large for a KV value, by SHA-256".into()),
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let made = vec![
            provision::ensure(&js, "bucket", &bucket, &format!("KV_{bucket}"), || async {
                js.create_key_value(plugins).await.map(|_| ())
            })
            .await?,
            provision::ensure(
                &js,
                "object store",
                &config.object_bucket,
                &format!("OBJ_{}", config.object_bucket),
                || async { js.create_object_store(modules).await.map(|_| ()) },
            )
            .await?,
        ];
        let kv = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| bucket_error(&bucket, e.to_string()))?;
        let objects = js
            .get_object_store(&config.object_bucket)
            .await
            .map_err(|e| bucket_error(&config.object_bucket, e.to_string()))?;
        let distribution = Distribution {
            kv,
            objects,
            object_bucket: config.object_bucket.clone(),
            env: config.env.clone(),
            signer: None,
        };
        Ok((distribution, made))
    }

    /// Signs every record put from now on with `key`.
    pub fn sign_with(&mut self, key: nkeys::KeyPair) {
        self.signer = Some(std::sync::Arc::new(key));
    }

    /// The plugins bucket.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// The environment whose bucket this is.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// Builds the record for a plugin file of any kind in [`crate::kinds::KINDS`] (a module
    /// takes its sidecar manifest along); binary code over `inline_limit` bytes goes to the
    /// object store.
    pub async fn record_for_file(
        &self,
        path: &Path,
        version: Option<&str>,
        inline_limit: usize,
    ) -> Result<(String, PluginRecord), DistributionError> {
        let file_error = |message: String| DistributionError::File {
            path: path.display().to_string(),
            message,
        };
        let read = path.to_path_buf();
        let (kind, code, name) = tokio::task::spawn_blocking(move || {
            kinds::read(&read).map(|(kind, code)| {
                let name = (kind.served_name)(&code);
                (kind, code, name)
            })
        })
        .await
        .map_err(|e| file_error(e.to_string()))?
        .map_err(|e| DistributionError::Operation(e.to_string()))?;
        let sha256 = sha256_hex(&code.body);
        let mut record = PluginRecord {
            kind: kind.kind,
            source: None,
            module: None,
            object: None,
            manifest: code.sidecar,
            version: version.map_or_else(|| sha256[..12].to_string(), str::to_string),
            sha256,
            publisher: publisher(),
            published_ms: wire::unix_ms(),
            rollback_of: None,
            signer: None,
            signature: None,
            canary: None,
            tests: None,
            promoted_from: None,
        };
        if kind.text {
            record.source = Some(
                String::from_utf8(code.body).map_err(|_| file_error("not UTF-8 text".into()))?,
            );
        } else if code.body.len() > inline_limit {
            // Objects are named by their content: one already stored is this module. Putting
            // it again would purge the old chunks, which a publisher's credential may not.
            let stored = self.objects.info(record.sha256.as_str()).await;
            if !stored.is_ok_and(|info| !info.deleted) {
                self.objects
                    .put(record.sha256.as_str(), &mut code.body.as_slice())
                    .await
                    .map_err(|e| file_error(format!("object store: {e}")))?;
            }
            record.object = Some(record.sha256.clone());
        } else {
            record.module = Some(code.body);
        }
        Ok((name, record))
    }

    /// The code a record carries: its text, or its module bytes (inline or from the object
    /// store), checked against the record's SHA-256.
    pub async fn code(&self, record: &PluginRecord) -> Result<Vec<u8>, DistributionError> {
        match &record.source {
            Some(source) => {
                let actual = sha256_hex(source.as_bytes());
                if actual != record.sha256 {
                    return Err(DistributionError::Operation(format!(
                        "source SHA-256 {actual} does not match the record's {:?}",
                        record.sha256
                    )));
                }
                Ok(source.clone().into_bytes())
            }
            None => self.module(record).await,
        }
    }

    /// Publishes a file; returns the plugin name and the new revision.
    pub async fn publish_file(
        &self,
        path: &Path,
        version: Option<&str>,
        inline_limit: usize,
    ) -> Result<(String, u64), DistributionError> {
        let (name, record) = self.record_for_file(path, version, inline_limit).await?;
        let revision = self.put(&name, &record).await?;
        Ok((name, revision))
    }

    /// Puts a record under `name` (signed, when this handle signs); returns the new revision.
    /// A record put unsigned keeps the signature it carries (a rollback).
    pub async fn put(&self, name: &str, record: &PluginRecord) -> Result<u64, DistributionError> {
        match &self.signer {
            Some(key) => {
                let mut signed = record.clone();
                super::signature::sign(name, &mut signed, key).map_err(op(name))?;
                self.put_as_is(name, &signed).await
            }
            None => self.put_as_is(name, record).await,
        }
    }

    /// The current record and revision of `name`, if any.
    pub async fn current(
        &self,
        name: &str,
    ) -> Result<Option<(u64, PluginRecord)>, DistributionError> {
        let entry = self
            .kv
            .entry(name)
            .await
            .map_err(|e| DistributionError::Operation(format!("read {name}: {e}")))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record = PluginRecord::decode(&e.value).map_err(op(name))?;
                Ok(Some((e.revision, record)))
            }
            _ => Ok(None),
        }
    }

    /// Every stored revision of `name`, oldest first: `(revision, record)`, `None` for deletes.
    pub async fn history(&self, name: &str) -> Result<Vec<(u64, Stored)>, DistributionError> {
        let mut history = self
            .kv
            .history(name)
            .await
            .map_err(|e| DistributionError::Operation(format!("history of {name}: {e}")))?;
        let mut out = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry.map_err(|e| DistributionError::Operation(e.to_string()))?;
            let stored = match entry.operation {
                kv::Operation::Put => match PluginRecord::decode(&entry.value) {
                    Ok(record) => Stored::Record(Box::new(record)),
                    Err(e) => Stored::Unreadable(e),
                },
                _ => Stored::Deleted,
            };
            out.push((entry.revision, stored));
        }
        Ok(out)
    }

    /// Republishes an earlier revision of `name`: `to`, or else the revision before the
    /// current one. Returns `(new revision, revision rolled back to)`.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
    ) -> Result<(u64, u64), DistributionError> {
        if to.is_none() {
            if let Some((_, current)) = self.current(name).await? {
                if let Some(canary) = &current.canary {
                    return self.drop_canary(name, canary.stable).await;
                }
            }
        }
        let history = self.history(name).await?;
        if history.is_empty() {
            return Err(self.not_published(name, "roll back"));
        }
        let puts: Vec<(u64, PluginRecord)> = history
            .into_iter()
            .filter_map(|(rev, stored)| match stored {
                Stored::Record(record) => Some((rev, *record)),
                Stored::Deleted | Stored::Unreadable(_) => None,
            })
            .collect();
        let target = match to {
            Some(rev) => puts
                .iter()
                .find(|(r, _)| *r == rev)
                .cloned()
                .ok_or_else(|| {
                    DistributionError::Operation(format!(
                        "{name} has no stored revision {rev} (stored: {})",
                        puts.iter()
                            .map(|(r, _)| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            None => {
                let mut previous = puts.iter().rev().skip(1);
                previous.next().cloned().ok_or_else(|| {
                    DistributionError::Operation(format!(
                        "{name} has one stored revision: nothing to roll back to (`mofa history {name}`)"
                    ))
                })?
            }
        };
        let (rev, record) = target;
        self.republish(name, rev, record).await
    }

    /// Puts revision `rev` (`record`) of `name` again as the only revision (no canary);
    /// returns `(new revision, rev)`.
    async fn republish(
        &self,
        name: &str,
        rev: u64,
        mut record: PluginRecord,
    ) -> Result<(u64, u64), DistributionError> {
        record.rollback_of = Some(rev);
        record.canary = None;
        record.publisher = publisher();
        record.published_ms = wire::unix_ms();
        let new = self.put_as_is(name, &record).await?;
        Ok((new, rev))
    }

    /// Drops the canary of `name`: its stable revision `stable` serves everything again.
    async fn drop_canary(&self, name: &str, stable: u64) -> Result<(u64, u64), DistributionError> {
        let record = self.revision(name, stable).await?;
        self.republish(name, stable, record).await
    }

    /// Revision `rev` of `name`, which must hold a plugin record.
    pub async fn revision(&self, name: &str, rev: u64) -> Result<PluginRecord, DistributionError> {
        let entry = self.kv.entry_for_revision(name, rev).await.map_err(|e| {
            DistributionError::Operation(format!("read {name} revision {rev}: {e}"))
        })?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                PluginRecord::decode(&e.value).map_err(op(name))
            }
            _ => Err(DistributionError::Operation(format!(
                "{name} has no stored revision {rev} in the {} bucket (it may be older than the bucket's history)",
                self.env
            ))),
        }
    }

    /// Publishes `record` of `name` as a canary beside the revision serving now (or beside
    /// the stable revision of the canary serving now, which it replaces). Returns the new
    /// revision and the stable one.
    pub async fn publish_canary(
        &self,
        name: &str,
        mut record: PluginRecord,
        mut canary: Canary,
    ) -> Result<(u64, u64), DistributionError> {
        let Some((current, serving)) = self.current(name).await? else {
            return Err(DistributionError::Operation(format!(
                "{name} has no revision in the {} environment to run a canary beside; publish it without --canary first",
                self.env
            )));
        };
        canary.stable = serving.canary.map_or(current, |c| c.stable);
        canary.validate().map_err(op(name))?;
        let stable = canary.stable;
        record.canary = Some(canary);
        let revision = self.put(name, &record).await?;
        Ok((revision, stable))
    }

    /// Makes the canary of `name` the only revision: its record is put again without the
    /// canary (same code, SHA-256 and signature). Returns the new revision and the canary's.
    pub async fn promote_canary(&self, name: &str) -> Result<(u64, u64), DistributionError> {
        let Some((current, mut record)) = self.current(name).await? else {
            return Err(DistributionError::Operation(format!(
                "{name} is not published in the {} environment",
                self.env
            )));
        };
        if record.canary.take().is_none() {
            return Err(DistributionError::Operation(format!(
                "{name} has no canary in the {} environment (revision {current} serves every request); to copy it to another environment, use --from and --to",
                self.env
            )));
        }
        record.publisher = publisher();
        record.published_ms = wire::unix_ms();
        let revision = self.put_as_is(name, &record).await?;
        Ok((revision, current))
    }

    /// Copies the revision of `name` serving in `from` into this environment, exactly: same
    /// code, SHA-256 and signature. Returns the new revision here and the one copied.
    pub async fn promote_from(
        &self,
        from: &Distribution,
        name: &str,
    ) -> Result<(u64, u64), DistributionError> {
        let Some((revision, mut record)) = from.current(name).await? else {
            return Err(DistributionError::Operation(format!(
                "{name} is not published in the {} environment",
                from.env
            )));
        };
        if record.canary.is_some() {
            return Err(DistributionError::Operation(format!(
                "{name} runs a canary in the {env} environment (revision {revision}); promote or roll it back there first (`mofa promote {name} --env {env}` or `mofa rollback {name} --env {env}`)",
                env = from.env
            )));
        }
        record.promoted_from = Some(format!("{}@{revision}", from.env));
        record.rollback_of = None;
        record.publisher = publisher();
        record.published_ms = wire::unix_ms();
        let new = self.put_as_is(name, &record).await?;
        Ok((new, revision))
    }

    /// Puts `record` with the signature it carries, whether or not this handle signs.
    async fn put_as_is(&self, name: &str, record: &PluginRecord) -> Result<u64, DistributionError> {
        subjects::validate_name(name).map_err(|e| DistributionError::Operation(e.to_string()))?;
        let bytes = record.encode().map_err(op("encode"))?;
        self.kv
            .put(name, bytes.into())
            .await
            .map_err(|e| DistributionError::Operation(format!("publish {name}: {e}")))
    }

    /// The error for an `action` on `name`, which the bucket does not hold.
    pub fn not_published(&self, name: &str, action: &'static str) -> DistributionError {
        DistributionError::NotPublished {
            plugin: name.to_string(),
            bucket: self.kv.name.clone(),
            action,
        }
    }

    /// Deletes `name`: every worker removes its endpoint. A plugin the bucket does not hold
    /// is an error: nothing was removed.
    pub async fn remove(&self, name: &str) -> Result<(), DistributionError> {
        if self.current(name).await?.is_none() {
            return Err(self.not_published(name, "remove"));
        }
        self.kv
            .delete(name)
            .await
            .map_err(|e| DistributionError::Operation(format!("delete {name}: {e}")))
    }

    /// The module bytes of a wasm record (inline or from the object store), checked against the
    /// record's SHA-256.
    pub async fn module(&self, record: &PluginRecord) -> Result<Vec<u8>, DistributionError> {
        let bytes = match (&record.module, &record.object) {
            (Some(bytes), _) => bytes.clone(),
            (None, Some(object)) => {
                let mut reader = self.objects.get(object).await.map_err(|e| {
                    DistributionError::Operation(format!(
                        "object {object} in {}: {e}",
                        self.object_bucket
                    ))
                })?;
                let mut bytes = Vec::new();
                reader
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| DistributionError::Operation(format!("object {object}: {e}")))?;
                bytes
            }
            (None, None) => {
                return Err(DistributionError::Operation(
                    "record carries neither source, module nor object".into(),
                ))
            }
        };
        let actual = sha256_hex(&bytes);
        if actual != record.sha256 {
            return Err(DistributionError::Operation(format!(
                "module SHA-256 {actual} does not match the record's {}",
                record.sha256
            )));
        }
        Ok(bytes)
    }
}

/// `user@host` of this process.
fn publisher() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
