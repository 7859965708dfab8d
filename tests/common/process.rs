//! `mofa` as a child process: a worker with the flags a test needs, one-shot verbs, and the
//! lines a child prints, read with a timeout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::NatsServer;

/// A spawned `mofa worker` process, killed on drop.
pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    /// `mofa worker` on `server` serving `plugins`, with `config_file` when given.
    pub fn spawn(server: &NatsServer, plugins: &Path, config_file: Option<&Path>) -> WorkerProcess {
        let mut command = WorkerCommand::new(&server.url(), plugins);
        if let Some(file) = config_file {
            command = command.config(file);
        }
        command.spawn()
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

/// `mofa worker --nats URL --plugins DIR` to spawn, logging at `warn` (or
/// `$MOFA_TEST_WORKER_LOG`) to the test's stderr unless told otherwise: the one place the
/// tests start worker processes.
pub struct WorkerCommand {
    command: Command,
}

impl WorkerCommand {
    pub fn new(url: &str, plugins: &Path) -> WorkerCommand {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mofa"));
        command
            .args(["worker", "--nats", url, "--plugins"])
            .arg(plugins)
            .env(
                "RUST_LOG",
                std::env::var("MOFA_TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        WorkerCommand { command }
    }

    /// `--name NAME`.
    pub fn name(self, name: &str) -> WorkerCommand {
        self.args(&["--name", name])
    }

    /// `--config FILE`.
    pub fn config(mut self, file: &Path) -> WorkerCommand {
        self.command.arg("--config").arg(file);
        self
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> WorkerCommand {
        self.command.args(args);
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> WorkerCommand {
        self.command.env(key, value);
        self
    }

    /// An environment variable removed.
    pub fn env_remove(mut self, key: &str) -> WorkerCommand {
        self.command.env_remove(key);
        self
    }

    /// Starts it, its stderr shown with the test's.
    pub fn spawn(mut self) -> WorkerProcess {
        WorkerProcess {
            child: self.command.spawn().expect("worker process starts"),
        }
    }

    /// Starts it with its stderr kept for the test, read as lines; `what` names it in
    /// failure messages.
    pub fn spawn_logged(mut self, what: &str) -> (WorkerProcess, Lines) {
        let mut child = self
            .command
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker process starts");
        let lines = Lines::of(child.stderr.take().expect("stderr"), what);
        (WorkerProcess { child }, lines)
    }

    /// Starts it with its stderr piped and untouched, for a test that reads it to the end.
    pub fn spawn_piped(mut self) -> Child {
        self.command
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker process starts")
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
