//! The publishing side of distribution: the plugins bucket and the module object store.

use std::path::Path;

use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::record::{sha256_hex, PluginRecord};
use crate::config::ReloadConfig;
use crate::kinds;
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
    /// Opens both buckets, creating them if they do not exist yet.
    pub async fn open(
        client: async_nats::Client,
        config: &ReloadConfig,
    ) -> Result<Distribution, DistributionError> {
        let js = jetstream::new(client);
        let bucket_error = |bucket: &str, e: String| DistributionError::Bucket {
            bucket: bucket.to_string(),
            message: e,
        };
        let kv = match js.get_key_value(&config.bucket).await {
            Ok(kv) => kv,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: config.bucket.clone(),
                    description: "mofa-bus plugins: one key per plugin, history for rollback"
                        .into(),
                    history: config.history,
                    num_replicas: config.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(kv) => kv,
                // Another worker may have created it meanwhile.
                Err(create) => js
                    .get_key_value(&config.bucket)
                    .await
                    .map_err(|_| bucket_error(&config.bucket, create.to_string()))?,
            },
        };
        let objects = match js.get_object_store(&config.object_bucket).await {
            Ok(os) => os,
            Err(_) => match js
                .create_object_store(object_store::Config {
                    bucket: config.object_bucket.clone(),
                    description: Some(
                        "mofa-bus modules too large for a KV value, by SHA-256".into(),
                    ),
                    num_replicas: config.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(os) => os,
                Err(create) => js
                    .get_object_store(&config.object_bucket)
                    .await
                    .map_err(|_| bucket_error(&config.object_bucket, create.to_string()))?,
            },
        };
        Ok(Distribution {
            kv,
            objects,
            object_bucket: config.object_bucket.clone(),
            signer: None,
        })
    }

    /// Signs every record put from now on with `key`.
    pub fn sign_with(&mut self, key: nkeys::KeyPair) {
        self.signer = Some(std::sync::Arc::new(key));
    }

    /// The plugins bucket.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
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
        };
        if kind.text {
            record.source = Some(
                String::from_utf8(code.body).map_err(|_| file_error("not UTF-8 text".into()))?,
            );
        } else if code.body.len() > inline_limit {
            self.objects
                .put(record.sha256.as_str(), &mut code.body.as_slice())
                .await
                .map_err(|e| file_error(format!("object store: {e}")))?;
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
        subjects::validate_name(name).map_err(|e| DistributionError::Operation(e.to_string()))?;
        let bytes = match &self.signer {
            Some(key) => {
                let mut signed = record.clone();
                super::signature::sign(name, &mut signed, key).map_err(op(name))?;
                signed.encode()
            }
            None => record.encode(),
        }
        .map_err(op("encode"))?;
        self.kv
            .put(name, bytes.into())
            .await
            .map_err(|e| DistributionError::Operation(format!("publish {name}: {e}")))
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
        let history = self.history(name).await?;
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
                        "{name} has no earlier revision to roll back to"
                    ))
                })?
            }
        };
        let (rev, mut record) = target;
        record.rollback_of = Some(rev);
        record.publisher = publisher();
        record.published_ms = wire::unix_ms();
        let new = self.put(name, &record).await?;
        Ok((new, rev))
    }

    /// Deletes `name`: every worker removes its endpoint.
    pub async fn remove(&self, name: &str) -> Result<(), DistributionError> {
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
