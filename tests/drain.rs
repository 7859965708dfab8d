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
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.3 { } x }",
    )]);
    let config_file = dir.path().join("worker.toml");
    std::fs::write(
        &config_file,
        "[rhai]\nmax_operations = 0\ntimeout_ms = 10000\n",
    )
    .expect("config");
    let mut worker = WorkerProcess::spawn(&server, dir.path(), Some(&config_file));
    let client = server.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;

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
    tokio::time::sleep(Duration::from_millis(150)).await;
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
