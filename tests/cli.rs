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
            .expect_value();
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

    // A table: a header, then one row per revision with its time in UTC and its version.
    let history = mofa(&["history", "tax"], &url);
    let table = String::from_utf8_lossy(&history.stdout).to_string();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].contains("REVISION") && rows[0].contains("PUBLISHED (UTC)"),
        "{table}"
    );
    let year = rows[1].split_whitespace().nth(1).expect("a date");
    assert!(
        year.starts_with("20") && year.len() == 10,
        "a date, not epoch ms: {table}"
    );
    assert!(
        rows[1].contains("one") && rows[2].contains("two"),
        "{table}"
    );
    // --json keeps the raw fields.
    let json = mofa(&["history", "tax", "--json"], &url);
    let raw: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(raw.len(), 2, "{json:?}");
    assert!(raw[0]["published_ms"]
        .as_u64()
        .is_some_and(|ms| ms > 1_700_000_000_000));
    assert_eq!(raw[1]["version"], "two");
    assert_eq!(raw[1]["sha256"].as_str().map(str::len), Some(64));

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
    // Nothing to remove, roll back or list: one wording, exit 1.
    for args in [
        &["remove", "tax"][..],
        &["rollback", "never_here"],
        &["history", "never_here"],
        &["remove", "never_here"],
    ] {
        let out = mofa(args, &url);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not published in the mofa_plugins bucket: nothing to"),
            "{args:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("removed"),
            "{args:?}"
        );
    }
    let bad = mofa(&["publish", "/no/such/file.rhai"], &url);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nothing published"),
        "{bad:?}"
    );
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
        .env("MOFA_DATA_DIR", runtime.path())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let stderr = Lines::of(worker.stderr.take().expect("stderr"), "the --dev worker");
    let mut log = Vec::new();
    let announced = loop {
        let line = stderr.next_within(std::time::Duration::from_secs(120));
        log.push(line.clone());
        if line.contains("started nats-server") {
            break line;
        }
    };
    let connected = loop {
        let line = stderr.next_within(std::time::Duration::from_secs(60));
        log.push(line.clone());
        if line.contains("connected to NATS at") {
            break line;
        }
    };
    // A log on a pipe: no colour, a timestamp on every line (the dev server's included), the
    // full URL, and no client-library chatter.
    for line in &log {
        assert!(!line.contains('\u{1b}'), "ANSI codes on a pipe: {line:?}");
        assert!(line.starts_with("20"), "no timestamp: {line:?}");
        assert!(
            !line.contains("async_nats"),
            "library chatter at info: {line:?}"
        );
    }
    assert!(announced.contains("without JetStream"), "{announced}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("runtime file written"))
            .expect("runtime file is JSON");
    let dev_url = record["url"].as_str().expect("url").to_string();
    assert_ne!(dev_url, unfit.url());
    assert!(announced.contains(&dev_url), "{announced}");
    assert!(connected.contains(&dev_url), "{connected}");

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

/// `mofa` with `args` in `dir`, against `url`, with `env` set.
fn mofa_in(dir: &std::path::Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(args)
        .args(["--nats", url])
        .current_dir(dir)
        .output()
        .expect("mofa runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// The bucket's revisions of `plugin`, by `mofa history --json` (none: `[]`).
fn revisions(plugin: &str, url: &str) -> Vec<serde_json::Value> {
    let out = mofa(&["history", plugin, "--json"], url);
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_builds_as_a_worker_would_and_a_broken_plugin_publishes_nothing() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = plugins_dir(&[
        ("rate.rhai", "fn execute(x) { x * 2 }"),
        (
            "broken.rhai",
            "fn execute(x) {\n    let y = (x + ;\n    y\n}\n",
        ),
    ]);
    let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8").to_string();
    let good = mofa(&["publish", &path("rate.rhai")], &url);
    assert!(good.status.success(), "{good:?}");

    // A syntax error: exit 1, the file, line and column, and the bucket unchanged; a good
    // file published beside it is not published either.
    for extra in [&[][..], &["--no-test"]] {
        let mut args = vec![
            "publish".to_string(),
            path("rate.rhai"),
            path("broken.rhai"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let broken = mofa(&args, &url);
        let stderr = text(&broken.stderr);
        assert_eq!(broken.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:2:", path("broken.rhai"))),
            "file:line:column: {stderr}"
        );
        assert!(stderr.contains("nothing published"), "{stderr}");
        assert!(!text(&broken.stdout).contains("published"), "{broken:?}");
    }
    assert_eq!(revisions("rate", &url).len(), 1, "the bucket is unchanged");
    assert!(revisions("broken", &url).is_empty(), "broken was never put");

    // A module whose manifest asks for more memory than a worker allows does not load on a
    // worker, so it is not published either.
    let wasm = dir.path().join("big.wasm");
    std::fs::copy(repo_plugins().join("discount_wasm.wasm"), &wasm).expect("module");
    std::fs::write(
        dir.path().join("big.toml"),
        "[limits]\nmax_memory_mb = 100000\n",
    )
    .expect("manifest");
    let refused = mofa(&["publish", &path("big.wasm")], &url);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(revisions("big", &url).is_empty());

    // `mofa test` counts a plugin that does not build as failed.
    let tested = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["test", &path("broken.rhai")])
        .output()
        .expect("mofa test runs");
    assert_eq!(tested.status.code(), Some(1), "{tested:?}");
    let stdout = text(&tested.stdout);
    assert!(
        stdout.contains("does not build") && stdout.contains("1 plugin(s) failed"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_speaks_once_per_change() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = plugins_dir(&[("fee.rhai", "fn execute(x) { x + 1 }")]);
    let file = dir.path().join("fee.rhai");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args([
            "watch",
            dir.path().to_str().expect("UTF-8"),
            "--debounce",
            "100ms",
        ])
        .args(["--nats", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mofa watch starts");
    let out = Lines::of(watch.stdout.take().expect("stdout"), "mofa watch stdout");
    let err = Lines::of(watch.stderr.take().expect("stderr"), "mofa watch stderr");
    let wait = std::time::Duration::from_secs(30);
    let start = err.next_within(wait);
    assert!(
        start.contains("1 of 1 plugin file(s) differ") && start.contains("fee.rhai"),
        "{start}"
    );
    assert_eq!(out.next_within(wait), "published fee as revision 1");

    // Broken: one line, naming the file once, and nothing more while it stays broken.
    std::fs::write(&file, "fn execute(x) { x + }").expect("break it");
    let failed = err.next_within(wait);
    assert!(failed.starts_with("error: "), "{failed}");
    assert_eq!(failed.matches("fee.rhai").count(), 1, "{failed}");
    assert!(failed.contains("not published"), "{failed}");
    let quiet = std::time::Duration::from_millis(1500);
    assert_eq!(err.try_next_within(quiet), None, "repeated while unchanged");
    assert_eq!(out.try_next_within(quiet), None);

    // Back to what the bucket holds: one line saying it is fixed.
    std::fs::write(&file, "fn execute(x) { x + 1 }").expect("fix it");
    let fixed = out.next_within(wait);
    assert!(
        fixed.contains("fee.rhai is fixed") && fixed.contains("revision 1"),
        "{fixed}"
    );
    // A new version: published once.
    std::fs::write(&file, "fn execute(x) { x + 2 }").expect("change it");
    assert_eq!(out.next_within(wait), "published fee as revision 2");
    assert_eq!(out.try_next_within(quiet), None);
    assert_eq!(err.try_next_within(std::time::Duration::ZERO), None);
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ping_says_plainly_who_did_not_answer_and_self_finds_its_own_worker() {
    let server = NatsServer::start();
    let url = server.url();
    let plugins = plugins_dir(&[]);
    let data = tempfile::tempdir().expect("temp dir");
    let spawn = |name: &str, data_dir: &std::path::Path| WorkerProcess {
        child: Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args(["worker", "--nats", &url, "--name", name, "--plugins"])
            .arg(plugins.path())
            .env("MOFA_DATA_DIR", data_dir)
            .env_remove("MOFA_WORKER_ID")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("worker starts"),
    };
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    let _a = spawn("wa", &dir_a);
    let _b = spawn("wb", &dir_b);
    let ping = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mofa"));
        command.arg("ping").args(args).args(["--nats", &url]);
        match env {
            Some(id) => command.env("MOFA_WORKER_ID", id),
            None => command.env_remove("MOFA_WORKER_ID"),
        };
        command.output().expect("mofa ping runs")
    };
    // Each worker's own data directory names it.
    for (dir, id) in [(&dir_a, "wa"), (&dir_b, "wb")] {
        let dir = dir.to_str().expect("UTF-8");
        let started = std::time::Instant::now();
        let answer = loop {
            let out = ping(&["--self", "--data-dir", dir], None);
            if out.status.success() {
                break text(&out.stdout);
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{out:?}"
            );
        };
        assert!(
            answer.contains(&format!("\"id\":\"{id}\"")),
            "{id}: {answer}"
        );
    }
    // $MOFA_WORKER_ID (the worker's --name) wins.
    let named = ping(
        &["--self", "--data-dir", dir_a.to_str().expect("UTF-8")],
        Some("wb"),
    );
    assert!(text(&named.stdout).contains("\"id\":\"wb\""), "{named:?}");

    let nobody = ping(&["nosuchworker", "--timeout", "1s"], None);
    let said = text(&nobody.stderr);
    assert_eq!(nobody.status.code(), Some(1), "{said}");
    assert!(
        said.starts_with(
            "worker nosuchworker did not answer: no worker with that id serves mofa on nats://"
        ),
        "{said}"
    );
    assert_eq!(said.matches("no responders").count(), 0, "{said}");
    // Two workers sharing a data directory: --self refuses to guess.
    let _c = spawn("wc", &dir_a);
    let shared = dir_a.to_str().expect("UTF-8");
    let started = std::time::Instant::now();
    let both = loop {
        let out = ping(&["--self", "--data-dir", shared], None);
        if !out.status.success() {
            break text(&out.stderr);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{out:?}"
        );
    };
    assert!(
        both.contains("2 running workers") && both.contains("wa, wc"),
        "{both}"
    );
    let empty = tempfile::tempdir().expect("temp dir");
    let none = ping(
        &[
            "--self",
            "--data-dir",
            empty.path().to_str().expect("UTF-8"),
        ],
        None,
    );
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    assert!(
        text(&none.stderr).contains("no worker recorded its id"),
        "{none:?}"
    );
}

#[test]
fn connection_errors_say_the_cause_once_and_name_the_server_and_its_source() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let refused = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["exec", "echo", "1", "--nats", &url])
        .output()
        .expect("mofa runs");
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert_eq!(said.matches(&url).count(), 1, "{said}");
    assert_eq!(said.matches("Connection refused").count(), 1, "{said}");
    assert!(
        said.contains("from --nats") && said.contains("mofa worker --dev"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");

    let from_env = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["history", "x"])
        .env("MOFA_NATS_URL", &url)
        .output()
        .expect("mofa runs");
    assert!(
        text(&from_env.stderr).contains("from $MOFA_NATS_URL"),
        "{from_env:?}"
    );

    let runtime = tempfile::tempdir().expect("temp dir");
    let default = mofa_dev(&["ping"], &runtime.path().join("none.json"));
    let said = text(&default.stderr);
    if said.contains("cannot connect") {
        assert!(
            said.contains("the default") && said.contains("none.json"),
            "{said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_to_a_server_without_the_kv_api_names_it_and_the_fix() {
    let old = NatsServer::start_without_jetstream();
    let dir = plugins_dir(&[("t.rhai", "fn execute(x) { x }")]);
    let file = dir.path().join("t.rhai");
    let out = mofa(&["publish", file.to_str().expect("UTF-8")], &old.url());
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("without JetStream") && said.contains("mofa worker --dev"),
        "{said}"
    );
    assert!(
        said.contains(&format!(":{}", old.port())),
        "names the server: {said}"
    );
    assert!(!said.contains("untagged enum"), "{said}");
    // Debian's nats-server 2.9, where the machine has it: too old for the KV API.
    let debian = std::path::Path::new("/usr/sbin/nats-server");
    let version = Command::new(debian).arg("--version").output();
    if let Some(version) = version.ok().filter(|v| text(&v.stdout).contains("v2.9")) {
        let port = free_port();
        let store = tempfile::tempdir().expect("temp dir");
        let mut server = Command::new(debian)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server 2.9 starts");
        let url = format!("nats://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "2.9 never listened"
            );
        }
        let out = mofa(&["publish", file.to_str().expect("UTF-8")], &url);
        let _ = server.kill();
        let _ = server.wait();
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains(
                &text(&version.stdout)
                    .trim()
                    .replace("nats-server: v", "nats-server ")
            ) && said.contains("older than the 2.10")
                && said.contains("mofa worker --dev"),
            "{said}"
        );
        assert!(!said.contains("untagged enum"), "{said}");
    }
}

#[test]
fn every_verbs_help_has_examples_and_connection_flags_after_its_options() {
    let top = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .arg("--help")
        .output()
        .expect("mofa --help");
    let verbs: Vec<String> = text(&top.stdout)
        .split("Commands:")
        .nth(1)
        .expect("a command list")
        .split("Options:")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|verb| verb != "help")
        .collect();
    assert!(verbs.len() >= 20, "{verbs:?}");
    for verb in &verbs {
        let help = Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args([verb, "--help"])
            .output()
            .expect("mofa VERB --help");
        let help = text(&help.stdout);
        let examples = help
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("mofa {verb} --help has no examples:\n{help}"));
        let shown = examples
            .lines()
            .filter(|l| l.trim_start().starts_with("mofa "))
            .count();
        assert!((1..=3).contains(&shown), "mofa {verb}: {shown} examples");
        if let Some(connection) = help.find("Connection:") {
            let options = help.find("Options:").expect("an Options heading");
            assert!(
                options < connection,
                "mofa {verb}: connection flags before its options"
            );
        }
    }
    let worker = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["worker", "--help"])
        .output()
        .expect("mofa worker --help");
    let worker = text(&worker.stdout);
    assert!(
        worker.contains("*.wasm") && !worker.contains("every *.rhai file"),
        "{worker}"
    );
}

/// Splits a README command line as a shell would: words, '…' and "…" quoting.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Whether `text` is `pattern`, where each `...` in the pattern stands for any text.
fn matches_pattern(text: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return text == pattern;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The README's tour, run: every `mofa …  # → OUTPUT  (note)` line against a worker serving
/// the repository's plugins, its output (stdout; stderr for `error…`) and exit status
/// (`exit N` in the note, else 0) compared with the comment. The tour's own script
/// (`plugins/vat.rhai`) is written where the commands run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_tour_prints_what_its_comments_say() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(&server, &repo_plugins());
    cfg.data_dir = data.path().to_path_buf();
    let worker = worker(cfg).await;
    let url = server.url();
    let readme = std::fs::read_to_string(repo_plugins().join("../README.md")).expect("README");
    let tour = readme
        .split("## A five-minute tour")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("the tour");
    let here = tempfile::tempdir().expect("temp dir");
    let script = tour
        .split("```rhai\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the tour's script");
    std::fs::create_dir_all(here.path().join("plugins")).expect("plugins/");
    std::fs::write(here.path().join("plugins/vat.rhai"), script).expect("vat.rhai");

    let mut checked = 0;
    for block in tour.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        for line in block.lines().filter(|l| l.starts_with("mofa ")) {
            let Some((command, expected)) = line.split_once("# → ") else {
                continue;
            };
            let expected = expected.trim();
            let (expected, note) = match expected.rsplit_once("  (") {
                Some((out, note)) if note.ends_with(')') => (out.trim(), note),
                _ => (expected, ""),
            };
            let exit = note
                .split("exit ")
                .nth(1)
                .and_then(|n| n.trim_end_matches(')').parse::<i32>().ok())
                .unwrap_or(0);
            let words = shell_words(command.trim());
            let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
            let started = std::time::Instant::now();
            loop {
                let out = mofa_in(here.path(), &args, &url);
                let printed = if expected.starts_with("error") {
                    text(&out.stderr)
                } else {
                    text(&out.stdout)
                };
                let printed = printed.trim();
                if matches_pattern(printed, expected) && out.status.code() == Some(exit) {
                    break;
                }
                // A plugin just published reaches the worker within moments: ask again.
                assert!(
                    args[0] == "exec" && started.elapsed() < std::time::Duration::from_secs(20),
                    "README tour: `{}` printed {printed:?} (exit {:?}), its comment says {expected:?} (exit {exit})",
                    command.trim(),
                    out.status.code()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} tour lines are checked");
    worker.shutdown().await.expect("drains");
}

/// A `mofa worker --dev` beside an unfit server at `unfit`, keeping its store in `data`: the
/// process, its stderr and the dev server's URL once it has started one.
fn spawn_dev_worker(
    unfit: &str,
    runtime_file: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, Lines, String) {
    let empty = plugins_dir(&[]);
    let mut worker = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["worker", "--dev", "--nats", unfit, "--plugins"])
        .arg(empty.path())
        .args(extra)
        .env("MOFA_RUNTIME_FILE", runtime_file)
        .env("MOFA_DATA_DIR", data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let stderr = Lines::of(worker.stderr.take().expect("stderr"), "the --dev worker");
    loop {
        let line = stderr.next_within(std::time::Duration::from_secs(120));
        if line.contains("started nats-server") {
            break;
        }
    }
    // Ready once it serves: its Services API answers.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runtime_file).expect("runtime file"))
            .expect("JSON");
    let url = record["url"].as_str().expect("url").to_string();
    let started = std::time::Instant::now();
    while !mofa(&["ping", "--timeout", "500ms"], &url).status.success() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "never served"
        );
    }
    (worker, stderr, url)
}

/// SIGTERM, then the exit status.
fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().expect("exits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dev_server_keeps_its_state_across_restarts_and_other_workers_ride_them_out() {
    let unfit = NatsServer::start_without_jetstream();
    let runtime = tempfile::tempdir().expect("temp dir");
    let file = runtime.path().join("dev-server.json");
    let data = runtime.path().join("data");
    let (first, _log, url) = spawn_dev_worker(&unfit.url(), &file, &data, &[]);

    let sources = plugins_dir(&[("tax.rhai", "fn execute(x) { x * 2 }")]);
    let tax = sources.path().join("tax.rhai");
    assert!(mofa(&["publish", tax.to_str().expect("UTF-8")], &url)
        .status
        .success());
    let job = mofa(&["submit", "tax", "21", "--id", "kept-1", "--wait"], &url);
    assert!(job.status.success(), "{job:?}");
    // Another worker on the dev server, with a plugin of its own.
    let own = plugins_dir(&[("only_b.rhai", "fn execute(x) { x + 100 }")]);
    let other_data = tempfile::tempdir().expect("temp dir");
    let other = WorkerProcess {
        child: Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args(["worker", "--nats", &url, "--plugins"])
            .arg(own.path())
            .env("MOFA_DATA_DIR", other_data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("second worker starts"),
    };
    let answers = |expected: &str| {
        let started = std::time::Instant::now();
        loop {
            let out = mofa(&["exec", "only_b", "1"], &url);
            if text(&out.stdout).trim() == expected {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "{out:?}"
            );
        }
    };
    answers("101");

    assert!(stop(first).success(), "the first worker drains");
    let (second, _log, again) = spawn_dev_worker(&unfit.url(), &file, &data, &[]);
    assert_eq!(again, url, "the dev server comes back on the same URL");
    let kept = revisions("tax", &url);
    assert_eq!(kept.len(), 1, "history survives the restart: {kept:?}");
    let result = mofa(&["job", "kept-1"], &url);
    assert!(
        text(&result.stdout).contains("\"done\""),
        "the job's result survives: {result:?}"
    );
    // The other worker reconnected on its own and serves again.
    answers("101");

    assert!(stop(second).success());
    let (third, _log, _) = spawn_dev_worker(&unfit.url(), &file, &data, &["--fresh"]);
    assert!(
        revisions("tax", &url).is_empty(),
        "--fresh empties the store"
    );
    assert!(stop(third).success());
    drop(other);
}

#[test]
fn a_worker_refuses_a_trusted_key_that_is_not_an_nkey_public_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("worker.toml");
    std::fs::write(&file, "[reload]\ntrusted_keys = [\"not-a-key\"]\n").expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args([
            "worker",
            "--nats",
            &format!("nats://127.0.0.1:{}", free_port()),
        ])
        .arg("--config")
        .arg(&file)
        .output()
        .expect("mofa worker runs");
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("reload.trusted_keys: \"not-a-key\" is not an nkey public key"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_builds_the_revision_before_copying_it_to_another_environment() {
    let server = NatsServer::start();
    let url = server.url();
    let client = server.client().await;
    let dir = plugins_dir(&[("levy.rhai", "fn execute(x) { x + }")]);
    // A revision that does not build, put in staging's bucket directly (as a publisher that
    // bypasses `mofa publish` could).
    let staging = mofa_bus::distribution::Distribution::open(
        client.clone(),
        &mofa_bus::config::ReloadConfig::default()
            .in_env("staging")
            .expect("an environment"),
    )
    .await
    .expect("staging's bucket");
    let (name, record) = staging
        .record_for_file(
            &dir.path().join("levy.rhai"),
            None,
            mofa_bus::distribution::INLINE_LIMIT,
        )
        .await
        .expect("a record");
    staging.put(&name, &record).await.expect("put");
    let out = mofa(
        &["promote", "levy", "--from", "staging", "--to", "production"],
        &url,
    );
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("levy.rhai (revision 1):1:") && said.contains("nothing promoted"),
        "{said}"
    );
    assert!(
        revisions("levy", &url).is_empty(),
        "production is unchanged"
    );
}
