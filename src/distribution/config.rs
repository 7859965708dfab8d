//! The worker's `[reload]` section: which environment it follows, its plugins bucket and
//! object store, and how revisions are fetched and trusted.

use serde::{Deserialize, Serialize};

use crate::subjects::PRODUCTION;

/// An environment name that cannot name a bucket.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEnv(pub String);

/// Distribution of plugins over JetStream and hot reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Follow the plugins bucket (if the server has JetStream).
    pub enabled: bool,
    /// The environment this worker follows (`--env`, `MOFA_ENV`): each environment has its
    /// own plugins bucket (see [`ReloadConfig::kv_bucket`]), so staging and production serve
    /// their own revisions.
    pub env: String,
    /// Key-Value bucket holding one record per plugin (of the `production` environment; other
    /// environments add `_<env>`).
    pub bucket: String,
    /// Object Store bucket for large modules.
    pub object_bucket: String,
    /// Revisions kept per plugin when the worker creates the bucket.
    pub history: i64,
    /// Copies of the buckets a worker creates, one per JetStream server: 1 on a single node,
    /// 3 on a 3-node cluster (so the buckets survive a node), at most 5.
    pub replicas: usize,
    /// Attempts to fetch and load a revision when the failure may be transient (a module
    /// fetch from the object store); compile errors are not retried.
    pub max_attempts: u32,
    /// Pause between attempts, in milliseconds (doubling each time).
    pub retry_backoff_ms: u64,
    /// A reloaded Rhai script keeps the state map (`state_get`/`state_set`) of the revision it
    /// replaces.
    pub preserve_state: bool,
    /// nkey public keys (`U…`) whose signed revisions this worker loads; when set, unsigned,
    /// untrusted and tampered revisions are rejected. Empty: every revision is accepted.
    pub trusted_keys: Vec<String>,
}

impl ReloadConfig {
    /// The plugins bucket of `env`: `bucket` for `production`, `<bucket>_<env>` for any other.
    /// Environments share the module object store, whose objects are named by their SHA-256.
    pub fn bucket_of(&self, env: &str) -> String {
        if env == PRODUCTION {
            self.bucket.clone()
        } else {
            format!("{}_{env}", self.bucket)
        }
    }

    /// The plugins bucket of the environment this worker follows.
    pub fn kv_bucket(&self) -> String {
        self.bucket_of(&self.env)
    }

    /// The subjects of the environment this worker follows.
    pub fn namespace(&self) -> crate::subjects::Namespace {
        crate::subjects::Namespace::of(&self.env)
    }

    /// This config, following `env` instead.
    pub fn in_env(&self, env: &str) -> Result<ReloadConfig, InvalidEnv> {
        validate_env(env)?;
        Ok(ReloadConfig {
            env: env.to_string(),
            ..self.clone()
        })
    }
}

/// Checks an environment name: it becomes part of a bucket name.
pub fn validate_env(env: &str) -> Result<(), InvalidEnv> {
    if env.is_empty()
        || env.len() > 64
        || !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(InvalidEnv(format!(
            "environment {env:?}: an environment name is 1 to 64 of [A-Za-z0-9_-] (e.g. staging, production)"
        )));
    }
    Ok(())
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            env: PRODUCTION.into(),
            bucket: "mofa_plugins".into(),
            object_bucket: "mofa_modules".into(),
            history: 10,
            replicas: 1,
            max_attempts: 3,
            retry_backoff_ms: 200,
            preserve_state: false,
            trusted_keys: Vec::new(),
        }
    }
}
