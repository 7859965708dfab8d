//! The `mofa` command line against a real worker: exec output and exit codes, events as JSON,
//! publishing, and `worker --dev` on a server that cannot do hot reload.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_prints_json_and_exits_by_outcome() {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    let url = server.url();

    let ok = mofa(
        &[
            "exec",
            "discount",
            r#"{"price": 100, "customer_tier": "gold"}"#,
        ],
        &url,
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "80.0");

    let echo = mofa(
        &["exec", "echo", r#"{"a": [1, "x", null, true, 2.5]}"#],
        &url,
    );
    let json: serde_json::Value = serde_json::from_slice(&echo.stdout).expect("JSON output");
    assert_eq!(json, serde_json::json!({"a": [1, "x", null, true, 2.5]}));

    let bad = mofa(
        &[
            "exec",
            "discount",
            r#"{"price": "ten", "customer_tier": "gold"}"#,
        ],
        &url,
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("price must be a number"),
        "{stderr}"
    );

    let missing = mofa(&["exec", "no_such_plugin"], &url);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no worker serves plugin"));

    let not_json = mofa(&["exec", "echo", "{oops"], &url);
    assert_eq!(not_json.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_json.stderr).contains("not valid JSON"));

    worker.shutdown().await.expect("drains");
    let no_server = mofa(&["exec", "echo", "1", "--timeout", "1s"], &url);
    assert_eq!(no_server.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_prints_result_events_as_json_lines() {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    let mut events = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["events", "echo", "--nats", &server.url()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mofa events runs");
    let stdout = events.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let client = server.client().await;
    // Keep sending until the subscriber is up and has printed a line.
    for i in 0..100 {
        call(&client, "echo", mofa_bus::wire::Value::from(i))
            .await
            .ok();
        if lines.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = lines.join().expect("reader").expect("a line");
    let _ = events.kill();
    let _ = events.wait();
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["event"], "result");
    assert_eq!(event["plugin"], "echo");
    assert_eq!(event["kind"], "native");
    assert_eq!(event["ok"], true);
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_plugins_history_rollback_and_remove_from_the_command_line() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let mut cfg = config(&server, empty.path());
    cfg.worker_id = Some("cli-worker".into());
    let worker = worker(cfg).await;
    let url = server.url();
    let sources = plugins_dir(&[("tax.rhai", "fn execute(x) { x * 2 }")]);
    let file = sources.path().join("tax.rhai");
    let file = file.to_str().expect("UTF-8 path");

    let published = mofa(&["publish", file, "--version", "one"], &url);
    assert!(published.status.success(), "{published:?}");
    assert!(String::from_utf8_lossy(&published.stdout).contains("published tax as revision"));
    std::fs::write(sources.path().join("tax.rhai"), "fn execute(x) { x * 3 }").expect("edit");
    assert!(mofa(&["publish", file, "--version", "two"], &url)
        .status
        .success());

    let started = std::time::Instant::now();
    loop {
        let out = mofa(&["exec", "tax", "10"], &url);
        if String::from_utf8_lossy(&out.stdout).trim() == "30" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "v2 never served: {out:?}"
        );
    }

    let listed = mofa(&["plugins", "--json"], &url);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let tax = rows
        .iter()
        .find(|r| r["plugin"] == "tax")
        .expect("tax listed");
    assert_eq!(tax["worker"], "cli-worker");
    assert_eq!(tax["kind"], "rhai");
    assert_eq!(tax["version"], "two");
    assert!(!tax["revision"].as_str().unwrap_or("").is_empty(), "{tax}");

    let history = mofa(&["history", "tax"], &url);
    assert_eq!(
        String::from_utf8_lossy(&history.stdout).lines().count(),
        2,
        "{history:?}"
    );

    let rolled = mofa(&["rollback", "tax"], &url);
    assert!(rolled.status.success(), "{rolled:?}");
    let started = std::time::Instant::now();
    loop {
        let out = mofa(&["exec", "tax", "10"], &url);
        if String::from_utf8_lossy(&out.stdout).trim() == "20" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "rollback never served: {out:?}"
        );
    }

    assert!(mofa(&["remove", "tax"], &url).status.success());
    let started = std::time::Instant::now();
    while mofa(&["exec", "tax", "10"], &url).status.code() != Some(2) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "tax still served"
        );
    }
    let bad = mofa(&["publish", "/no/such/file.rhai"], &url);
    assert_eq!(bad.status.code(), Some(2));
    worker.shutdown().await.expect("drains");
}

/// `mofa` with no `--nats` and no `MOFA_NATS_URL`: it goes by the `--dev` runtime file.
fn mofa_dev(args: &[&str], runtime_file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(args)
        .env("MOFA_RUNTIME_FILE", runtime_file)
        .env_remove("MOFA_NATS_URL")
        .output()
        .expect("mofa runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_worker_starts_a_current_server_beside_an_unfit_one_and_other_verbs_find_it() {
    let unfit = NatsServer::start_without_jetstream();
    let runtime = tempfile::tempdir().expect("temp dir");
    let file = runtime.path().join("dev-server.json");
    let empty = plugins_dir(&[]);
    let mut worker = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["worker", "--dev", "--nats", &unfit.url(), "--plugins"])
        .arg(empty.path())
        .env("MOFA_RUNTIME_FILE", &file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let stderr = Lines::of(worker.stderr.take().expect("stderr"), "the --dev worker");
    let announced = loop {
        let line = stderr.next_within(std::time::Duration::from_secs(120));
        if line.contains("started nats-server") {
            break line;
        }
    };
    assert!(announced.contains("without JetStream"), "{announced}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("runtime file written"))
            .expect("runtime file is JSON");
    let dev_url = record["url"].as_str().expect("url").to_string();
    assert_ne!(dev_url, unfit.url());
    assert!(announced.contains(&dev_url), "{announced}");

    // Hot reload works through the dev server, found without --nats.
    let sources = plugins_dir(&[("tax.rhai", "fn execute(x) { x * 2 }")]);
    let script = sources.path().join("tax.rhai");
    let published = mofa_dev(&["publish", script.to_str().expect("UTF-8")], &file);
    assert!(published.status.success(), "{published:?}");
    let started = std::time::Instant::now();
    loop {
        let out = mofa_dev(&["exec", "tax", "21"], &file);
        if String::from_utf8_lossy(&out.stdout).trim() == "42" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the published script was never served: {out:?}"
        );
    }

    // SIGTERM: the worker drains, stops its server and withdraws the runtime file.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let status = worker.wait().expect("worker exits");
    assert!(status.success(), "{status:?}");
    assert!(!file.exists(), "runtime file removed on exit");
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the worker's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// `async_threads` picks the worker's runtime: a thread per core by default, one thread (no
/// runtime threads of its own) or n from the config file, `MOFA_ASYNC_THREADS` over the file.
/// Each serves a native plugin, a script and a script's call to another plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_threads_sets_the_workers_runtime_and_every_setting_serves() {
    use mofa_bus::wire::Value;
    use mofa_bus::worker::runtime::MULTI_THREAD_NAME;
    let server = NatsServer::start();
    let dir = plugins_dir(&[
        ("double.rhai", "fn execute(x) { x * 2 }"),
        (
            "quadruple.rhai",
            "fn execute(x) { call_plugin(\"double\", x) * 2 }",
        ),
    ]);
    let file = dir.path().join("worker.toml");
    std::fs::write(&file, "async_threads = 1\n").expect("config");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let client = server.client().await;
    // (config file, MOFA_ASYNC_THREADS, the runtime threads the worker has: exactly, at least)
    for (config, env, threads) in [
        (None, None, (None, cores)),
        (Some(&file), None, (Some(0), 0)),
        (Some(&file), Some("3"), (None, 3)),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mofa"));
        command
            .args(["worker", "--nats", &server.url(), "--plugins"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("MOFA_ASYNC_THREADS")
            .stdout(Stdio::null());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        if let Some(env) = env {
            command.env("MOFA_ASYNC_THREADS", env);
        }
        let worker = WorkerProcess {
            child: command.spawn().expect("worker starts"),
        };
        wait_for_plugin(&client, "quadruple", Value::from(1)).await;
        let runtime = thread_names(worker.child.id())
            .iter()
            .filter(|name| *name == MULTI_THREAD_NAME)
            .count();
        let (exactly, at_least) = threads;
        if let Some(exactly) = exactly {
            assert_eq!(runtime, exactly, "{config:?} {env:?}: runtime threads");
        }
        assert!(
            runtime >= at_least,
            "{config:?} {env:?}: {runtime} runtime threads"
        );
        for (plugin, input, output) in [
            ("echo", Value::from("hi"), Value::from("hi")),
            ("double", Value::from(21), Value::from(42)),
            ("quadruple", Value::from(5), Value::from(20)),
        ] {
            assert_eq!(
                call(&client, plugin, input).await,
                Reply::Ok(output),
                "{config:?} {env:?}: {plugin}"
            );
        }
        drop(worker);
    }
}
