//! The fixture most tests start from: a [`TestBus`] is a real nats-server, an in-process
//! worker serving a plugins directory, and a client, built in one line and torn down on drop.
//!
//! ```ignore
//! let bus = TestBus::repo().await;
//! let client = bus.client.clone();
//! let bus = TestBus::builder()
//!     .scripts(&[("greet.rhai", "fn execute(input) { `hi ${input}` }")])
//!     .config(|c| c.max_concurrency = 2)
//!     .start()
//!     .await;
//! ```
//! A test that needs a second worker on the same server, or a server it set up itself, uses
//! [`serve`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::Client;
use mofa_bus::config::WorkerConfig;
use mofa_bus::plugin::AgentPlugin;
use mofa_bus::worker::Worker;

use super::NatsServer;

/// A plugins directory holding the given scripts.
pub fn plugins_dir(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(dir.path(), scripts);
    dir
}

/// The repository's own `plugins/` directory.
pub fn repo_plugins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

/// A config pointing at `server` and `dir`.
pub fn config(server: &NatsServer, dir: &Path) -> WorkerConfig {
    WorkerConfig {
        nats_url: server.url(),
        plugins_dir: dir.to_path_buf(),
        ..WorkerConfig::default()
    }
}

/// An in-process worker on `server` serving a temporary directory that holds `files` (name or
/// relative path, source), with `tune` applied to its config; the directory lives as long as
/// the returned handle.
pub async fn serve(
    server: &NatsServer,
    files: &[(&str, &str)],
    tune: impl FnOnce(&mut WorkerConfig),
) -> (Worker, tempfile::TempDir) {
    let dir = plugins_dir(files);
    let mut cfg = config(server, dir.path());
    tune(&mut cfg);
    (worker(cfg).await, dir)
}

/// [`serve`], checking that every plugin loaded.
pub async fn serve_loaded(
    server: &NatsServer,
    files: &[(&str, &str)],
    tune: impl FnOnce(&mut WorkerConfig),
) -> (Worker, tempfile::TempDir) {
    let (worker, dir) = serve(server, files, tune).await;
    assert_loaded(&worker);
    (worker, dir)
}

/// Panics, naming them, if any of the worker's plugins failed to load.
pub fn assert_loaded(worker: &Worker) {
    assert!(
        worker.load_failures().is_empty(),
        "plugins that failed to load: {:?}",
        worker.load_failures()
    );
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, source) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("directory");
        std::fs::write(path, source).expect("file written");
    }
}

/// Starts an in-process worker.
pub async fn worker(config: WorkerConfig) -> Worker {
    Worker::start(config).await.expect("worker starts")
}

/// Starts an in-process worker with the given native plugins.
pub async fn worker_with(config: WorkerConfig, natives: Vec<Arc<dyn AgentPlugin>>) -> Worker {
    Worker::start_with(config, natives)
        .await
        .expect("worker starts")
}

/// Where a bus's worker finds its plugins.
pub enum Plugins {
    /// The repository's `plugins/`.
    Repo,
    /// A temporary directory, removed when the bus is dropped.
    Temp(tempfile::TempDir),
}

impl Plugins {
    pub fn path(&self) -> PathBuf {
        match self {
            Plugins::Repo => repo_plugins(),
            Plugins::Temp(dir) => dir.path().to_path_buf(),
        }
    }
}

/// A server, a worker on it and a client of it.
pub struct TestBus {
    pub server: NatsServer,
    pub worker: Worker,
    pub client: Client,
    pub plugins: Plugins,
    /// The config the worker started with (a second worker on the bus can start with it).
    pub config: WorkerConfig,
}

impl TestBus {
    /// A worker serving the repository's `plugins/` with the default config.
    pub async fn repo() -> TestBus {
        TestBus::builder().repo_plugins().start().await
    }

    /// A bus to set up: an empty temporary plugins directory and the default config unless
    /// told otherwise.
    pub fn builder<'a>() -> TestBusBuilder<'a> {
        TestBusBuilder {
            repo_plugins: false,
            scripts: Vec::new(),
            tweaks: Vec::new(),
        }
    }

    /// Drains the worker; panics if the drain fails.
    pub async fn shutdown(self) {
        self.worker.shutdown().await.expect("drains");
    }
}

type Tweak<'a> = Box<dyn FnOnce(&mut WorkerConfig) + 'a>;

/// What a [`TestBus`] starts with.
pub struct TestBusBuilder<'a> {
    repo_plugins: bool,
    scripts: Vec<(String, String)>,
    tweaks: Vec<Tweak<'a>>,
}

impl<'a> TestBusBuilder<'a> {
    /// Serve the repository's `plugins/`.
    pub fn repo_plugins(mut self) -> Self {
        self.repo_plugins = true;
        self
    }

    /// Serve a temporary directory holding these files (name, source).
    pub fn scripts(mut self, scripts: &[(&str, &str)]) -> Self {
        self.scripts.extend(
            scripts
                .iter()
                .map(|(name, source)| (name.to_string(), source.to_string())),
        );
        self
    }

    /// Change the worker's config before it starts.
    pub fn config(mut self, tweak: impl FnOnce(&mut WorkerConfig) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts the server, the worker (with the built-in natives) and the client.
    pub async fn start(self) -> TestBus {
        let server = NatsServer::start();
        let files: Vec<(&str, &str)> = self
            .scripts
            .iter()
            .map(|(name, source)| (name.as_str(), source.as_str()))
            .collect();
        assert!(
            !self.repo_plugins || self.scripts.is_empty(),
            "scripts go in a temporary directory, not the repository's plugins/"
        );
        let plugins = if self.repo_plugins {
            Plugins::Repo
        } else {
            Plugins::Temp(plugins_dir(&files))
        };
        let mut cfg = config(&server, &plugins.path());
        for tweak in self.tweaks {
            tweak(&mut cfg);
        }
        let worker = worker(cfg.clone()).await;
        let client = server.client().await;
        TestBus {
            server,
            worker,
            client,
            plugins,
            config: cfg,
        }
    }
}
