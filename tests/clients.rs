//! Clients in other languages, written with libraries this project did not write, against a
//! real worker: `examples/python/client.py` (nats-py) and `examples/js/client.mjs` (nats.js).
//! Each calls `discount`, reads an error reply from the headers, meets "no responders", and
//! follows the reload events of a revision published while it listens.
//!
//! Their runtimes are installed on first use into the cache (a venv with the pinned packages
//! of `examples/python/requirements.txt`; `npm ci` from `examples/js/package-lock.json`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use mofa_bus::pyvenv::{cache_dir, cached, VenvError};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The venv's python, with the client's pinned requirements installed.
fn python() -> PathBuf {
    python_venv(
        "py-client",
        &examples().join("python/requirements.txt"),
        "the Python client tests",
    )
}

/// A folder in the cache holding the JS client and its `npm ci`-installed packages.
fn js_client() -> PathBuf {
    let source = examples().join("js");
    let lock_text = std::fs::read(source.join("package-lock.json")).expect("package-lock.json");
    let name = format!("js-client-{}", &sha2_hex(&lock_text)[..12]);
    let made = cached(&cache_dir(), &name, |dir| {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).expect("copied");
        }
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "the JS client test needs node and npm (Debian: apt install nodejs npm): {e}"
                )
            });
        assert!(installed.success(), "npm ci in {} failed", dir.display());
        Ok::<(), VenvError>(())
    });
    let (dir, _) = made.unwrap_or_else(|e| panic!("JS client packages: {e}"));
    std::fs::copy(source.join("client.mjs"), dir.join("client.mjs")).expect("client copied");
    dir
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs a client against a worker and checks every line it prints.
async fn drive(mut client: Command, language: &str) {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    let mut child = client
        .args(["--nats", &server.url(), "--follow", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{language} client starts: {e}"));
    let lines = Lines::of(
        child.stdout.take().expect("stdout"),
        &format!("the {language} client"),
    );
    let next = || lines.next_json();

    let ok = next();
    assert_eq!(ok["call"], "discount", "{ok}");
    assert_eq!(ok["output"].as_f64(), Some(80.0), "{ok}");
    let err = next();
    assert_eq!(err["error"]["code"], 400, "{err}");
    assert_eq!(err["error"]["message"], "price must be a number", "{err}");
    assert_eq!(err["error"]["body"]["code"], 400, "{err}");
    assert_eq!(err["error"]["body"]["message"], "price must be a number");
    let none = next();
    assert_eq!(none["call"], "no_such_plugin", "{none}");
    assert!(
        none["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no responders")),
        "{none}"
    );
    let following = next();
    assert_eq!(
        following["following"], "mofa.events.reload.>",
        "{following}"
    );

    let sources = plugins_dir(&[("tax.rhai", "fn execute(x) { x * 2 }")]);
    let published = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .arg("publish")
        .arg(sources.path().join("tax.rhai"))
        .args(["--nats", &server.url()])
        .output()
        .expect("mofa publish runs");
    assert!(published.status.success(), "{published:?}");
    let started = next();
    let completed = next();
    for (event, status) in [(&started, "started"), (&completed, "completed")] {
        assert_eq!(event["subject"], "mofa.events.reload.tax", "{event}");
        assert_eq!(event["event"]["event"], "reload", "{event}");
        assert_eq!(event["event"]["plugin"], "tax", "{event}");
        assert_eq!(event["event"]["status"], status, "{event}");
        assert_eq!(event["event"]["kind"], "rhai", "{event}");
    }
    let status = child.wait().expect("client exits");
    assert!(status.success(), "{language} client: {status:?}");
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_with_nats_py_calls_reads_errors_and_follows_reloads() {
    let python = tokio::task::spawn_blocking(python).await.expect("venv");
    let mut command = Command::new(python);
    command.arg(examples().join("python/client.py"));
    drive(command, "Python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn js_client_with_nats_js_calls_reads_errors_and_follows_reloads() {
    let dir = tokio::task::spawn_blocking(js_client)
        .await
        .expect("npm ci");
    let mut command = Command::new("node");
    command.arg(dir.join("client.mjs"));
    drive(command, "JavaScript").await;
}
