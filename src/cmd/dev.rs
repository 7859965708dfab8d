//! `mofa worker --dev`: the full feature set on any machine.
//!
//! The worker needs a NATS server with JetStream at version 2.10 or newer (the Key-Value API of
//! hot reload). With `--dev`, when the server at the URL is missing, too old or has JetStream
//! off, the worker starts a current `nats-server -js` ([`mofa_bus::nats_server::current`], installed
//! once if need be) for as long as it runs, and writes its URL to a runtime file, so that
//! `mofa exec`, `publish` and the other verbs find it when neither `--nats` nor `MOFA_NATS_URL`
//! is given. The file is ignored once that server stops answering. The server's store lives in
//! the worker's data directory, and the server comes back on the same URL when the worker
//! restarts, so published revisions, history, canaries and jobs survive a restart.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use mofa_bus::nats_server::{self, NatsServerError, Version};

/// How long probing a server may take before it counts as missing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What answers at a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A server with JetStream, new enough for hot reload.
    Ready,
    /// Nothing answers.
    Missing,
    /// A server older than [`nats_server::MIN_VERSION`].
    TooOld(String),
    /// A current server with JetStream off.
    NoJetStream(String),
}

impl Probe {
    /// Why a dev server is needed, for the message that says one is being started.
    pub fn reason(&self, url: &str) -> String {
        match self {
            Probe::Ready => format!("{url} is ready"),
            Probe::Missing => format!("no NATS server answers at {url}"),
            Probe::TooOld(v) => format!(
                "the server at {url} is nats-server {v}, too old for the JetStream Key-Value API \
                 hot reload needs ({}+)",
                nats_server::MIN_VERSION
            ),
            Probe::NoJetStream(v) => format!(
                "the server at {url} (nats-server {v}) runs without JetStream, which hot reload \
                 needs"
            ),
        }
    }
}

/// Connects to `url` and says whether it can serve every feature.
pub async fn probe(url: &str) -> Probe {
    let options = async_nats::ConnectOptions::new().connection_timeout(PROBE_TIMEOUT);
    let client = match tokio::time::timeout(PROBE_TIMEOUT, options.connect(url)).await {
        Ok(Ok(client)) => client,
        _ => return Probe::Missing,
    };
    let info = client.server_info();
    let version = info.version.clone();
    if !Version::parse(&version).is_some_and(Version::has_kv) {
        return Probe::TooOld(version);
    }
    if !info.jetstream {
        return Probe::NoJetStream(version);
    }
    Probe::Ready
}

/// Why a dev server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Binary(#[from] NatsServerError),
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("started {binary} on {url}, but it did not answer within 10 s")]
    NoAnswer { binary: PathBuf, url: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A `nats-server -js` started for a `--dev` worker. Its JetStream store lives in the worker's
/// data directory ([`store_dir`]) and its port is remembered there, so after a restart the
/// server comes back on the same URL with every revision, canary and job it held. Dropping it
/// stops the server and, if it still names this server, removes the runtime file; the store
/// stays (see [`wipe`]).
pub struct DevServer {
    child: Child,
    url: String,
    store: PathBuf,
    runtime_file: Option<PathBuf>,
    version: Version,
    binary: PathBuf,
}

impl DevServer {
    /// Starts the current nats-server with JetStream on `host:port` (`port` 0: the port
    /// remembered in `store` if it is free, else a free one), its JetStream store in `store`,
    /// installing the server first if the machine has none.
    pub async fn start(host: &str, port: u16, store: &Path) -> Result<DevServer, DevError> {
        let (binary, version) = tokio::task::spawn_blocking(nats_server::current)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let port = match port {
            0 => match remembered_port(store).filter(|port| is_free(host, *port)) {
                Some(port) => port,
                None => free_port(host)?,
            },
            port => port,
        };
        let store = store.to_path_buf();
        std::fs::create_dir_all(&store)?;
        std::fs::write(store.join(PORT_FILE), port.to_string())?;
        let mut command = Command::new(&binary);
        command
            .args(["-a", host, "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store);
        // Its own process group: Ctrl-C reaches the worker, which drains and then stops the
        // server, instead of both stopping at once and the drain losing its connection.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| DevError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let url = format!("nats://{host}:{port}");
        let server = DevServer {
            child,
            url,
            store,
            runtime_file: None,
            version,
            binary,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if probe(&server.url).await == Probe::Ready {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DevError::NoAnswer {
            binary: server.binary.clone(),
            url: server.url.clone(),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The binary that runs it.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its JetStream store.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// Records this server in the runtime file, for the other `mofa` verbs.
    pub fn advertise(&mut self, file: &Path) -> std::io::Result<()> {
        let record = RuntimeRecord {
            url: self.url.clone(),
            worker_pid: std::process::id(),
            server_pid: self.child.id(),
            version: self.version.to_string(),
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&record).map_err(std::io::Error::other)?;
        // Written whole, then renamed: a reader never sees half a file.
        let partial = file.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, file)?;
        self.runtime_file = Some(file.to_path_buf());
        Ok(())
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::info!(
            "stopped nats-server at {}; its store stays in {} for the next `mofa worker --dev` (`--fresh` empties it)",
            self.url,
            self.store.display()
        );
        if let Some(file) = &self.runtime_file {
            if read_record(file).is_some_and(|r| r.url == self.url) {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// What the runtime file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuntimeRecord {
    url: String,
    worker_pid: u32,
    server_pid: u32,
    version: String,
}

/// Where a `--dev` worker records the server it started: `$MOFA_RUNTIME_FILE`, else
/// `dev-server.json` in the cache directory.
pub fn runtime_file() -> PathBuf {
    std::env::var_os("MOFA_RUNTIME_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| mofa_bus::pyvenv::cache_dir().join("dev-server.json"))
}

fn read_record(file: &Path) -> Option<RuntimeRecord> {
    let text = std::fs::read_to_string(file).ok()?;
    serde_json::from_str(&text).ok()
}

/// The URL in the runtime `file`, if that server still accepts connections.
pub fn advertised_url(file: &Path) -> Option<String> {
    let record = read_record(file)?;
    let (host, port) = host_port(&record.url)?;
    let addr = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    Some(record.url)
}

/// Where a command's server URL came from, for messages about that server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlOrigin {
    /// Given by the user (a flag, the environment or a config file).
    Given,
    /// The live `--dev` server recorded in this runtime file.
    DevServer(PathBuf),
    /// Nothing given and no live `--dev` server recorded in this runtime file: the default.
    Default(PathBuf),
}

/// The URL a command connects to: the one given (`--nats`, `MOFA_NATS_URL` or a config file),
/// else a live `--dev` server's, else the default; and where it came from.
pub fn resolve(given: Option<String>) -> (String, UrlOrigin) {
    if let Some(url) = given {
        return (url, UrlOrigin::Given);
    }
    let file = runtime_file();
    match advertised_url(&file) {
        Some(url) => (url, UrlOrigin::DevServer(file)),
        None => (
            mofa_bus::config::DEFAULT_NATS_URL.to_string(),
            UrlOrigin::Default(file),
        ),
    }
}

/// Host and port of the first server in a NATS URL list (`nats://user:pw@host:port,...`).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None if !rest.is_empty() => Some((rest.to_string(), 4222)),
        None => None,
    }
}

/// The file in a dev server's store that remembers its port.
const PORT_FILE: &str = "port";

/// Where a `--dev` worker keeps its server's JetStream store: `dev-nats/` in its data
/// directory.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-nats")
}

/// The port the dev server whose store is `store` last listened on.
fn remembered_port(store: &Path) -> Option<u16> {
    std::fs::read_to_string(store.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Empties a dev server's store (`mofa worker --dev --fresh`): every revision, history,
/// canary and job it held is gone. Whether there was one.
pub fn wipe(store: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(store) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_free(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

fn free_port(host: &str) -> std::io::Result<u16> {
    TcpListener::bind((host, 0))?.local_addr().map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_port() {
        assert_eq!(
            host_port("nats://127.0.0.1:4333"),
            Some(("127.0.0.1".into(), 4333))
        );
        assert_eq!(
            host_port("nats://u:p@localhost:5000,nats://b:6000"),
            Some(("localhost".into(), 5000))
        );
        assert_eq!(host_port("demo.local"), Some(("demo.local".into(), 4222)));
        assert_eq!(host_port("nats://h:notaport"), None);
    }

    #[test]
    fn a_runtime_file_naming_a_dead_server_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("dev-server.json");
        let port = free_port("127.0.0.1").expect("port");
        let record = RuntimeRecord {
            url: format!("nats://127.0.0.1:{port}"),
            worker_pid: 1,
            server_pid: 1,
            version: "2.15.1".into(),
        };
        std::fs::write(&file, serde_json::to_string(&record).expect("json")).expect("written");
        assert_eq!(advertised_url(&file), None, "nothing listens on {port}");
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        assert_eq!(advertised_url(&file), Some(record.url.clone()));
        drop(listener);
        std::fs::write(&file, "not json").expect("written");
        assert_eq!(advertised_url(&file), None);
    }
}
