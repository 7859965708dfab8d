//! SIGTERM drains: a worker process stops taking requests, answers every in-flight one and
//! exits 0.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mofa_bus::wire::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_of_slow_requests_answers_every_request() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "slow.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 1.0 { } x }",
    )]);
    let config_file = dir.path().join("worker.toml");
    std::fs::write(
        &config_file,
        // Four run at once, so a burst of twelve leaves eight waiting, visible in $SRV.STATS.
        "max_concurrency = 4\n[rhai]\nmax_operations = 0\ntimeout_ms = 10000\n",
    )
    .expect("config");
    let mut worker = WorkerProcess::spawn(&server, dir.path(), Some(&config_file));
    let client = server.client().await;
    wait_until_listed(&client, "slow").await;

    let burst: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                call_raw(
                    &client,
                    "slow",
                    mofa_bus::wire::encode(&Value::from(i)),
                    Duration::from_secs(20),
                )
                .await
            })
        })
        .collect();
    // Every request has reached the worker: four running, eight waiting.
    wait_until_queued(&client, "slow", 8).await;
    // SAFETY: kill(2) with a pid we spawned and own.
    let rc = unsafe { libc::kill(worker.pid(), libc::SIGTERM) };
    assert_eq!(rc, 0, "SIGTERM sent");

    for (i, request) in burst.into_iter().enumerate() {
        let reply = request
            .await
            .expect("joins")
            .expect("every request is answered");
        assert_eq!(reply, Reply::Ok(Value::from(i)), "request {i}");
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = worker.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "worker did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "worker exited with {status}");
    let err = call_raw(&client, "slow", bytes::Bytes::new(), Duration::from_secs(2))
        .await
        .expect_err("a stopped worker serves nothing");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

/// A `mofa worker` process serving `dir` with `config`, its stderr kept for the test.
fn spawn_worker(server: &NatsServer, dir: &std::path::Path, config: &str) -> std::process::Child {
    let file = dir.join("worker.toml");
    std::fs::write(&file, config).expect("config");
    WorkerCommand::new(&server.url(), dir)
        .config(&file)
        .env("RUST_LOG", "warn")
        .spawn_piped()
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and own.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "signal sent");
}

/// Waits up to `limit` for `child` to exit; returns its status and how long that took.
async fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "still running {limit:?} after the signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stderr_of(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

const SLOW: &str = "fn execute(x) { let t = timestamp(); while t.elapsed < 3.0 { } x }";
/// One slow request runs at a time, so the others wait in the queue, where `$SRV.STATS` shows them.
const SLOW_CONFIG: &str = "max_concurrency = 1\n[rhai]\nmax_operations = 0\ntimeout_ms = 10000\n";

/// Sends three slow requests and waits until the worker holds them all: one running, two
/// queued (as `$SRV.STATS` reports).
async fn slow_requests_in_flight(client: &async_nats::Client) {
    for i in 0..3 {
        let request = async_nats::Request::new()
            .payload(mofa_bus::wire::encode(&Value::from(i)))
            .timeout(Some(Duration::from_secs(30)));
        let client = client.clone();
        tokio::spawn(async move {
            let _ = client
                .send_request(mofa_bus::subjects::exec("slow"), request)
                .await;
        });
    }
    wait_until_queued(client, "slow", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_the_server_gone_exits_within_the_drain_timeout_and_says_why() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("slow.rhai", SLOW)]);
    let mut worker = spawn_worker(
        &server,
        dir.path(),
        &format!("drain_timeout_ms = 1500\n{SLOW_CONFIG}"),
    );
    let client = server.client().await;
    wait_until_listed(&client, "slow").await;
    slow_requests_in_flight(&client).await;
    drop(server);
    signal(&worker, libc::SIGTERM);
    let (status, took) = exit_within(&mut worker, Duration::from_secs(10)).await;
    assert!(took < Duration::from_millis(3000), "exited after {took:?}");
    assert_eq!(status.code(), Some(3), "an incomplete drain exits 3");
    let log = stderr_of(&mut worker);
    assert!(
        log.contains("drain incomplete after drain_timeout_ms = 1500 ms"),
        "{log}"
    );
    assert!(
        log.contains("request(s) still running were not answered"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_signal_exits_at_once() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("slow.rhai", SLOW)]);
    let mut worker = spawn_worker(&server, dir.path(), SLOW_CONFIG);
    let client = server.client().await;
    wait_until_listed(&client, "slow").await;
    slow_requests_in_flight(&client).await;
    signal(&worker, libc::SIGTERM);
    // Draining: the worker no longer answers the Services API.
    let began = Instant::now();
    // A short timeout per ping: one sent as the worker unsubscribes gets no answer at all.
    let ping = || {
        client.send_request(
            "$SRV.PING.mofa",
            async_nats::Request::new().timeout(Some(Duration::from_millis(200))),
        )
    };
    while ping().await.is_ok() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the worker still answers $SRV.PING 10 s after SIGTERM"
        );
    }
    assert!(
        worker.try_wait().expect("wait").is_none(),
        "the first signal drains: slow requests are still running"
    );
    signal(&worker, libc::SIGINT);
    let (status, took) = exit_within(&mut worker, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(1000), "exited after {took:?}");
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_watch_and_mcp_stop_on_a_signal_even_with_the_server_gone() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args(args)
            .args(["--nats", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mofa starts")
    };
    let client = server.client().await;

    // `mofa events` is ready once it prints an event published after it started.
    let mut events = spawn(&["events"]);
    let printed = Lines::of(events.stdout.take().expect("stdout"), "mofa events");
    let ready = Instant::now();
    loop {
        client
            .publish(
                "mofa.events.reload.probe",
                mofa_bus::wire::encode(&Value::from("probe")),
            )
            .await
            .expect("published");
        client.flush().await.expect("flushed");
        if printed
            .try_next_within(Duration::from_millis(100))
            .is_some()
        {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "mofa events printed nothing"
        );
    }
    // `mofa watch` says so once connected.
    let mut watch = spawn(&["watch", dir.path().to_str().expect("utf-8 path")]);
    let said = Lines::of(watch.stderr.take().expect("stderr"), "mofa watch");
    assert!(said
        .next_within(Duration::from_secs(20))
        .starts_with("watching"));
    // `mofa mcp` answers an MCP client's initialize once it serves.
    let mut mcp = spawn(&["mcp"]);
    let mut stdin = mcp.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"drain-test","version":"1"}}}}}}"#
    )
    .expect("initialize sent");
    let answered = Lines::of(mcp.stdout.take().expect("stdout"), "mofa mcp");
    assert!(answered
        .next_within(Duration::from_secs(20))
        .contains("\"id\":1"));

    drop(server);
    for (mut child, verb) in [(events, "events"), (watch, "watch"), (mcp, "mcp")] {
        signal(&child, libc::SIGTERM);
        let (status, took) = exit_within(&mut child, Duration::from_secs(5)).await;
        assert!(
            took < Duration::from_secs(2),
            "mofa {verb} exited after {took:?}"
        );
        assert_eq!(status.code(), Some(0), "mofa {verb}");
    }
    drop(stdin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_nothing_in_flight_and_the_server_gone_exits_at_once() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("double.rhai", "fn execute(x) { x * 2 }")]);
    let mut worker = spawn_worker(&server, dir.path(), "");
    let client = server.client().await;
    wait_until_listed(&client, "double").await;
    drop(client);
    drop(server);
    signal(&worker, libc::SIGTERM);
    let (status, took) = exit_within(&mut worker, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(1), "exited after {took:?}");
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut worker));
}
