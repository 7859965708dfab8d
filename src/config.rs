//! Worker configuration: defaults that work, an optional TOML file, then environment and flags.
//!
//! ```toml
//! nats_url = "nats://127.0.0.1:4222"
//! plugins_dir = "plugins"
//! max_concurrency = 512        # per plugin; beyond it requests wait in the plugin's queue
//! max_queue = 50000            # per plugin; beyond it requests get 503 at once
//! queue_wait_ms = 10000        # a request that cannot start within this (or half its plugin's timeout) gets 503
//! sandbox_threads = 0          # threads for Rhai/WASM calls; 0 = 2 x cores, at least 4
//! async_threads = 0            # threads for NATS I/O and native plugins; 0 = one per core
//!
//! [nats]                       # credentials and TLS (flags: --creds, --nkey, --user, --token, --tls-*)
//! creds = "/etc/mofa/worker.creds"
//! tls_ca = "/etc/mofa/ca.pem"
//!
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"   # OTLP/HTTP; OTEL_EXPORTER_OTLP_ENDPOINT wins
//!
//! [events]
//! results = true               # publish mofa.events.result.<plugin>
//! include_output = true        # put the plugin's output in result events
//!
//! [rhai]
//! max_operations = 1000000
//! timeout_ms = 1000
//!
//! [wasm]
//! max_memory_mb = 64
//! fuel = 100000000
//!
//! [database]
//! url = ""                     # empty: SQLite file mofa.db in data_dir
//! allow_writes = false
//!
//! [jobs]
//! concurrency = 64             # durable jobs of one plugin running at once on this worker
//! max_deliver = 5              # attempts before a job goes to the dead-letter stream
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::connection::NatsAuth;
use crate::jobs::JobsConfig;
use crate::native::DatabaseConfig;
use crate::rhai::RhaiConfig;
use crate::telemetry::TelemetryConfig;
use crate::wasm::WasmConfig;

/// Default NATS URL when neither a flag, `MOFA_NATS_URL` nor the file sets one.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Everything a worker needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// NATS server URL; several, comma-separated, for a cluster (the worker reconnects to
    /// another when one goes down).
    pub nats_url: String,
    /// Credentials and TLS for the NATS connection.
    pub nats: NatsAuth,
    /// Directory scanned for `*.rhai` plugins.
    pub plugins_dir: PathBuf,
    /// Worker id; also the Services API instance id. Generated when absent.
    pub worker_id: Option<String>,
    /// Requests one plugin may run at once on this worker; further requests wait in its queue.
    pub max_concurrency: usize,
    /// Requests one plugin may hold waiting for a free slot on this worker; beyond it, 503 at
    /// once. 0: no queue (503 whenever `max_concurrency` requests are in flight).
    pub max_queue: usize,
    /// Longest a request waits in the queue (or for a sandbox thread) before it starts, in
    /// milliseconds; one that cannot start in time is answered 503. A request to a plugin with
    /// its own deadline (Rhai and WASM `timeout_ms`, `database.timeout_ms`, counted from
    /// admission) must also start within half of it, so it has the other half to run.
    pub queue_wait_ms: u64,
    /// Threads running sandboxed (Rhai, WASM) calls; 0 = twice the cores, at least 4.
    pub sandbox_threads: usize,
    /// Threads running the worker's async side: NATS I/O, admission, replies and events,
    /// native plugins and the sandboxed calls that start inline. 0 (the default): one per
    /// core. 1: a single-threaded runtime, the least CPU per request (no cross-thread
    /// wake-ups), for one worker per core or per small container; see
    /// [`crate::worker::runtime`]. `MOFA_ASYNC_THREADS` or `--async-threads` override it.
    pub async_threads: usize,
    /// How long a drain waits for in-flight requests before giving up, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Where the worker keeps files (the embedded database). Empty: `$XDG_DATA_HOME/mofa-bus`,
    /// else `~/.local/share/mofa-bus`; `MOFA_DATA_DIR` or `--data-dir` override it.
    pub data_dir: PathBuf,
    /// Result events.
    pub events: EventsConfig,
    /// Rhai sandbox limits.
    pub rhai: RhaiConfig,
    /// WASM sandbox defaults and ceilings.
    pub wasm: WasmConfig,
    /// Hot reload over the bus.
    pub reload: ReloadConfig,
    /// The `database` plugin.
    pub database: DatabaseConfig,
    /// Durable jobs (`mofa.jobs.<plugin>`).
    pub jobs: JobsConfig,
    /// OpenTelemetry export.
    pub telemetry: TelemetryConfig,
}

pub use crate::distribution::{validate_env, InvalidEnv, ReloadConfig};
pub use crate::subjects::PRODUCTION;

/// What the worker publishes about each execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Publish a result event after every execution.
    pub results: bool,
    /// Include the plugin's output in result events.
    pub include_output: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            results: true,
            include_output: true,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            nats: NatsAuth::default(),
            plugins_dir: PathBuf::from("plugins"),
            worker_id: None,
            max_concurrency: 512,
            max_queue: 50_000,
            queue_wait_ms: 10_000,
            sandbox_threads: 0,
            async_threads: 0,
            drain_timeout_ms: 30_000,
            data_dir: PathBuf::new(),
            events: EventsConfig::default(),
            rhai: RhaiConfig::default(),
            wasm: WasmConfig::default(),
            reload: ReloadConfig::default(),
            database: DatabaseConfig::default(),
            jobs: JobsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<InvalidEnv> for ConfigError {
    fn from(e: InvalidEnv) -> Self {
        ConfigError::Invalid(e.0)
    }
}

impl WorkerConfig {
    /// Reads a TOML file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Whether the TOML file at `path` sets the top-level `key` (rather than leaving its
    /// default), e.g. `nats_url`, which otherwise may come from a `--dev` server.
    pub fn file_sets(path: &Path, key: &str) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .is_some_and(|table| table.contains_key(key))
    }

    /// The data directory: `data_dir` when set, else `$XDG_DATA_HOME/mofa-bus`, else
    /// `~/.local/share/mofa-bus` (`./mofa-data` with no home directory).
    pub fn data_dir(&self) -> PathBuf {
        if !self.data_dir.as_os_str().is_empty() {
            return self.data_dir.clone();
        }
        let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
        let home = std::env::var_os("HOME").filter(|v| !v.is_empty());
        match (xdg, home) {
            (Some(xdg), _) => PathBuf::from(xdg).join("mofa-bus"),
            (None, Some(home)) => PathBuf::from(home).join(".local/share/mofa-bus"),
            (None, None) => PathBuf::from("mofa-data"),
        }
    }

    /// Parses TOML text; missing keys keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would make the worker unable to serve.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if self.queue_wait_ms == 0 {
            return Err(ConfigError::Invalid(
                "queue_wait_ms must be at least 1".into(),
            ));
        }
        if self.wasm.timeout_ms == 0 || self.wasm.max_memory_mb == 0 {
            return Err(ConfigError::Invalid(
                "wasm.timeout_ms and wasm.max_memory_mb must be at least 1".into(),
            ));
        }
        // The ABI packs buffer offsets into 31 bits (bit 63 flags errors).
        if self.wasm.max_memory_mb > 2048 {
            return Err(ConfigError::Invalid(
                "wasm.max_memory_mb can be at most 2048 (the ABI addresses 2 GiB)".into(),
            ));
        }
        validate_env(&self.reload.env)?;
        if !(1..=5).contains(&self.reload.replicas) {
            return Err(ConfigError::Invalid(format!(
                "reload.replicas is {}: JetStream keeps 1 to 5 copies of a bucket (1 on a single server, 3 on a 3-node cluster)",
                self.reload.replicas
            )));
        }
        self.nats
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[nats]: {e}")))?;
        if self.reload.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "reload.max_attempts must be at least 1".into(),
            ));
        }
        if self.rhai.timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "rhai.timeout_ms must be at least 1".into(),
            ));
        }
        self.database.validate().map_err(ConfigError::Invalid)?;
        self.jobs.validate().map_err(ConfigError::Invalid)?;
        if let Some(id) = &self.worker_id {
            crate::subjects::validate_name(id)
                .map_err(|e| ConfigError::Invalid(format!("worker id: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_only_what_it_names() {
        let config = WorkerConfig::from_toml("max_concurrency = 4\n[rhai]\ntimeout_ms = 50\n")
            .expect("parses");
        assert_eq!(config.max_concurrency, 4);
        assert_eq!(config.rhai.timeout_ms, 50);
        assert_eq!(
            config.rhai.max_operations,
            RhaiConfig::default().max_operations
        );
        assert_eq!(config.nats_url, DEFAULT_NATS_URL);
    }

    /// The ```toml blocks of the README, docs/, subjects.md and the WASM ABI, with the file
    /// each comes from.
    fn documented_toml() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![
            root.join("README.md"),
            root.join("subjects.md"),
            root.join("plugins/wasm/ABI.md"),
        ];
        let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
            .expect("docs/")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        docs.sort();
        files.extend(docs);
        let mut blocks = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("doc reads");
            for block in text.split("```toml\n").skip(1) {
                let body = block.split("```").next().unwrap_or_default();
                blocks.push((file.display().to_string(), body.to_string()));
            }
        }
        blocks
    }

    /// Every TOML block the docs show is checked: a worker configuration equals the real
    /// defaults (the docs say what a key does and its default in one place), a test-case file
    /// and a WASM manifest parse as what they are.
    #[test]
    fn every_toml_block_in_the_docs_is_the_real_defaults_or_parses_as_what_it_shows() {
        let blocks = documented_toml();
        let mut configs = 0;
        for (file, body) in &blocks {
            if body.contains("[[case]]") {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("x.test.toml");
                std::fs::write(&path, body).expect("case file");
                crate::local::cases::CaseFile::read(&path)
                    .unwrap_or_else(|e| panic!("{file}: a test-case block: {e}"));
            } else if body.contains("capabilities") {
                crate::wasm::Manifest::from_toml(body)
                    .unwrap_or_else(|e| panic!("{file}: a manifest block: {e}"));
            } else {
                let config = WorkerConfig::from_toml(body)
                    .unwrap_or_else(|e| panic!("{file}: a configuration block: {e}\n{body}"));
                assert_eq!(
                    config,
                    WorkerConfig::default(),
                    "{file}: this block and the defaults disagree:\n{body}"
                );
                configs += 1;
            }
        }
        assert!(
            configs >= 2,
            "the configuration reference is in docs/: {blocks:?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(WorkerConfig::from_toml("max_concurency = 4").is_err());
        assert!(WorkerConfig::from_toml("max_concurrency = 0").is_err());
        assert!(WorkerConfig::from_toml("worker_id = \"a.b\"").is_err());
        assert!(WorkerConfig::from_toml("[wasm]\nmax_memory_mb = 4096").is_err());
        assert!(WorkerConfig::from_toml("[reload]\nmax_attempts = 0").is_err());
    }
}
