//! Rhai `call_plugin` on real nats-servers: local calls inline, remote calls over the bus,
//! errors a script can catch with their codes, the depth limit across workers, and a caller's
//! own deadline and state surviving a nested call.

mod common;

use std::time::Duration;

use common::*;
use mofa_bus::config::WorkerConfig;
use mofa_bus::wire::Value;

const DISCOUNT: &str = r#"
fn execute(input) {
    if type_of(input.price) != "i64" { throw #{ code: 400, message: "price must be a number" }; }
    input.price * 8 / 10
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_calls_local_plugins_and_catches_their_errors_with_codes() {
    let server = NatsServer::start();
    let (worker, _dir) = serve_loaded(
        &server,
        &[
            ("disc.rhai", DISCOUNT),
            (
                "caller.rhai",
                r#"fn execute(x) { call_plugin("disc", #{ price: x }) + call_plugin("echo", 1) }"#,
            ),
            (
                "catcher.rhai",
                r#"fn execute(x) {
                       try { call_plugin("disc", #{ price: "ten" }); }
                       catch (e) { return #{ code: e.code, message: e.message }; }
                       "not reached"
                   }"#,
            ),
            (
                "uncaught.rhai",
                r#"fn execute(x) { call_plugin("disc", #{ price: "ten" }) }"#,
            ),
            (
                "nobody.rhai",
                r#"fn execute(x) { call_plugin("no_such_plugin", x) }"#,
            ),
            ("spin.rhai", "fn execute(x) { loop { } }"),
            ("waits.rhai", r#"fn execute(x) { call_plugin("spin", x) }"#),
            (
                "self.rhai",
                r#"fn execute(x) { call_plugin("self", x + 1) }"#,
            ),
            (
                "stateful.rhai",
                r#"fn execute(x) {
                       state_set("mine", x);
                       let other = call_plugin("disc", #{ price: 100 });
                       #{ mine: state_get("mine"), other: other }
                   }"#,
            ),
            (
                "after.rhai",
                r#"fn execute(x) { call_plugin("disc", #{ price: 100 }); loop { } }"#,
            ),
        ],
        // Spinning scripts meet their deadline, not the operation limit.
        |c| c.rhai.max_operations = 0,
    )
    .await;
    let client = server.client().await;
    assert_eq!(
        call(&client, "caller", Value::from(100))
            .await
            .expect_value(),
        Value::from(81)
    );
    assert_eq!(
        call(&client, "catcher", Value::Nil).await.expect_value(),
        map(&[
            ("code", Value::from(400)),
            ("message", Value::from("price must be a number")),
        ])
    );
    // Uncaught, the callee's code is the reply's.
    expect_error(
        &client,
        "uncaught",
        Value::Nil,
        400,
        "price must be a number",
        Duration::from_secs(2),
    )
    .await;
    expect_error(
        &client,
        "nobody",
        Value::Nil,
        503,
        "no_such_plugin",
        Duration::from_secs(2),
    )
    .await;
    // The callee runs under the caller's deadline.
    expect_error(
        &client,
        "waits",
        Value::Nil,
        408,
        "deadline",
        Duration::from_secs(3),
    )
    .await;
    // A script calling itself ends at the depth limit.
    expect_error(
        &client,
        "self",
        Value::from(0),
        413,
        "call depth limit of 8",
        Duration::from_secs(2),
    )
    .await;
    // The caller's state map and deadline are its own again after a nested call.
    assert_eq!(
        call(&client, "stateful", Value::from(7))
            .await
            .expect_value(),
        map(&[("mine", Value::from(7)), ("other", Value::from(80))])
    );
    expect_error(
        &client,
        "after",
        Value::Nil,
        408,
        "deadline",
        Duration::from_secs(3),
    )
    .await;
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_cross_workers_over_the_bus_and_the_depth_limit_stops_loops_between_them() {
    let server = NatsServer::start();
    let (front, _a) = serve_loaded(
        &server,
        &[
            (
                "front.rhai",
                r#"fn execute(x) { call_plugin("back", x) * 2 }"#,
            ),
            ("ping.rhai", r#"fn execute(x) { call_plugin("pong", x) }"#),
        ],
        |_| {},
    )
    .await;
    let (back, _b) = serve_loaded(
        &server,
        &[
            ("back.rhai", r#"fn execute(x) { if x < 0 { throw #{ code: 413, message: "too small" } } x + 1 }"#),
            ("pong.rhai", r#"fn execute(x) { call_plugin("ping", x) }"#),
        ],
        |_| {},
    )
    .await;
    let client = server.client().await;
    assert_eq!(
        call(&client, "front", Value::from(20)).await.expect_value(),
        Value::from(42)
    );
    // The remote callee's code survives the bus.
    expect_error(
        &client,
        "front",
        Value::from(-1),
        413,
        "too small",
        Duration::from_secs(2),
    )
    .await;
    // ping (front worker) and pong (back worker) call each other: the depth travels in
    // Mofa-Call-Depth and the chain ends with 413 instead of running until every deadline.
    expect_error(
        &client,
        "ping",
        Value::from(1),
        413,
        "call depth limit",
        Duration::from_secs(3),
    )
    .await;
    front.shutdown().await.expect("drains");
    back.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_scripts_calling_each_other_across_workers_does_not_starve_the_pools() {
    // a (first worker) calls b (second worker), which calls c (first worker): every a holds a
    // pool thread on the first worker while the c it needs waits for one. Two threads each.
    let server = NatsServer::start();
    let tune = |c: &mut WorkerConfig| {
        c.sandbox_threads = 2;
        c.max_concurrency = 1000;
        c.rhai.timeout_ms = 10_000;
    };
    let (first, _a) = serve_loaded(
        &server,
        &[
            ("a.rhai", r#"fn execute(x) { call_plugin("b", x) }"#),
            ("c.rhai", "fn execute(x) { x + 1 }"),
        ],
        tune,
    )
    .await;
    let (second, _b) = serve_loaded(
        &server,
        &[("b.rhai", r#"fn execute(x) { call_plugin("c", x) }"#)],
        tune,
    )
    .await;
    let client = server.client().await;
    let burst = 500;
    let calls: Vec<_> = (0..burst)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                call_raw(
                    &client,
                    "a",
                    mofa_bus::wire::encode(&Value::from(i)),
                    Duration::from_secs(15),
                )
                .await
            })
        })
        .collect();
    for (i, handle) in calls.into_iter().enumerate() {
        let reply = handle
            .await
            .expect("task")
            .expect("every request is answered");
        assert_eq!(reply.expect_value(), Value::from(i as i64 + 1));
    }
    first.shutdown().await.expect("drains");
    second.shutdown().await.expect("drains");
}
