//! Every Rhai sandbox limit, tripped over the bus: each gets the right error code and a message
//! that names the limit, within the deadline, and the worker keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mofa_bus::rhai::RhaiConfig;
use mofa_bus::wire::Value;

const HOSTILE: &[(&str, &str)] = &[
    (
        "thrower.rhai",
        r#"fn execute(x) { throw "out of stock: " + x.sku; }"#,
    ),
    ("typo.rhai", "fn execute(x) { no_such_function(x) }"),
    ("spin.rhai", "fn execute(x) { loop { } }"),
    (
        "big_string.rhai",
        r#"fn execute(x) { let s = "x"; for i in 0..40 { s += s; } s.len() }"#,
    ),
    (
        "recurse.rhai",
        "fn down(n) { down(n + 1) } fn execute(x) { down(0) }",
    ),
    (
        "nested.rhai",
        "fn down(n) { if n <= 0 { 0 } else { 1 + down(n - 1) } } fn execute(x) { down(x) }",
    ),
    (
        "big_map.rhai",
        r#"fn execute(x) { let m = #{}; for i in 0..x { m["k" + i] = i; } m.len() }"#,
    ),
    (
        "big_array.rhai",
        "fn execute(x) { let a = []; for i in 0..x { a.push(i); } a.len() }",
    ),
    ("ok.rhai", "fn execute(x) { x }"),
];

async fn start(
    server: &NatsServer,
    dir: &std::path::Path,
    rhai: RhaiConfig,
) -> mofa_bus::worker::Worker {
    let mut cfg = config(server, dir);
    cfg.rhai = rhai;
    worker(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_limits_stop_hostile_scripts_and_the_worker_keeps_serving() {
    let server = NatsServer::start();
    let dir = plugins_dir(HOSTILE);
    let defaults = RhaiConfig::default();
    let worker = start(&server, dir.path(), defaults.clone()).await;
    assert!(
        worker.load_failures().is_empty(),
        "{:?}",
        worker.load_failures()
    );
    let client = server.client().await;
    let deadline = defaults.timeout() + Duration::from_millis(500);

    expect_error(
        &client,
        "thrower",
        map(&[("sku", Value::from("A1"))]),
        500,
        "out of stock: A1",
        deadline,
    )
    .await;
    expect_error(&client, "typo", map(&[]), 500, "no_such_function", deadline).await;
    expect_error(
        &client,
        "spin",
        Value::Nil,
        413,
        "operation limit of 1000000",
        deadline,
    )
    .await;
    expect_error(
        &client,
        "big_string",
        Value::Nil,
        413,
        "bytes per string",
        deadline,
    )
    .await;
    expect_error(
        &client,
        "recurse",
        Value::Nil,
        413,
        "call-depth limit of 64",
        deadline,
    )
    .await;
    // A huge map or array trips a size or the operation limit, whichever comes first; the
    // configured-limits test below pins each one exactly.
    expect_error(
        &client,
        "big_map",
        Value::from(1_000_000),
        413,
        "limit",
        deadline,
    )
    .await;
    expect_error(
        &client,
        "big_array",
        Value::from(1_000_000),
        413,
        "limit",
        deadline,
    )
    .await;

    for plugin in [
        "thrower",
        "spin",
        "big_string",
        "recurse",
        "big_map",
        "big_array",
        "ok",
    ] {
        assert_eq!(
            call(&client, "ok", Value::from(plugin))
                .await
                .expect_value(),
            Value::from(plugin),
            "worker still serves after {plugin}"
        );
    }
    // Within the limits the same scripts work.
    assert_eq!(
        call(&client, "big_map", Value::from(100))
            .await
            .expect_value(),
        Value::from(100)
    );
    assert_eq!(
        call(&client, "big_array", Value::from(100))
            .await
            .expect_value(),
        Value::from(100)
    );
    assert_eq!(
        call(&client, "nested", Value::from(20))
            .await
            .expect_value(),
        Value::from(20)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadline_stops_an_infinite_loop_with_408() {
    let server = NatsServer::start();
    let dir = plugins_dir(HOSTILE);
    let rhai = RhaiConfig {
        max_operations: 0, // unlimited: only the clock can stop it
        timeout_ms: 200,
        ..RhaiConfig::default()
    };
    let worker = start(&server, dir.path(), rhai).await;
    let client = server.client().await;
    let started = Instant::now();
    expect_error(
        &client,
        "spin",
        Value::Nil,
        408,
        "deadline of 200 ms",
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "stopped before its deadline"
    );
    // Several at once: each is stopped, none blocks the others.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { call(&client, "spin", Value::Nil).await.code() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.expect("joins"), Some(408));
    }
    assert_eq!(
        call(&client, "ok", Value::from(1)).await.expect_value(),
        Value::from(1)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_limits_are_the_ones_enforced() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[
        (
            "count.rhai",
            "fn execute(n) { let t = 0; for i in 0..n { t += i; } t }",
        ),
        (
            "text.rhai",
            r#"fn execute(n) { let s = ""; for i in 0..n { s += "x"; } s }"#,
        ),
        HOSTILE[5],
        HOSTILE[6],
        HOSTILE[7],
    ]);
    let rhai = RhaiConfig {
        max_operations: 5_000,
        max_call_levels: 8,
        max_string_size: 100,
        max_array_size: 10,
        max_map_size: 10,
        ..RhaiConfig::default()
    };
    let worker = start(&server, dir.path(), rhai).await;
    let client = server.client().await;
    let within = Duration::from_secs(2);

    assert!(call(&client, "count", Value::from(100))
        .await
        .code()
        .is_none());
    expect_error(
        &client,
        "count",
        Value::from(100_000),
        413,
        "operation limit of 5000",
        within,
    )
    .await;
    assert_eq!(
        call(&client, "text", Value::from(100)).await.expect_value(),
        Value::from("x".repeat(100))
    );
    expect_error(
        &client,
        "text",
        Value::from(101),
        413,
        "100 bytes per string",
        within,
    )
    .await;
    assert_eq!(
        call(&client, "nested", Value::from(5)).await.expect_value(),
        Value::from(5)
    );
    expect_error(
        &client,
        "nested",
        Value::from(20),
        413,
        "call-depth limit of 8",
        within,
    )
    .await;
    assert_eq!(
        call(&client, "big_array", Value::from(10))
            .await
            .expect_value(),
        Value::from(10)
    );
    expect_error(
        &client,
        "big_array",
        Value::from(11),
        413,
        "10 elements per array",
        within,
    )
    .await;
    assert_eq!(
        call(&client, "big_map", Value::from(10))
            .await
            .expect_value(),
        Value::from(10)
    );
    expect_error(
        &client,
        "big_map",
        Value::from(11),
        413,
        "10 entries per map",
        within,
    )
    .await;
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expression_depth_limit_refuses_to_load_deep_scripts() {
    let server = NatsServer::start();
    let deep = format!("fn execute(x) {{ {}x{} }}", "(".repeat(50), ")".repeat(50));
    let shallow = format!("fn execute(x) {{ {}x{} }}", "(".repeat(5), ")".repeat(5));
    let dir = plugins_dir(&[("deep.rhai", &deep), ("shallow.rhai", &shallow)]);
    let rhai = RhaiConfig {
        max_expr_depth: 20,
        max_fn_expr_depth: 20,
        ..RhaiConfig::default()
    };
    let worker = start(&server, dir.path(), rhai).await;
    let failures = worker.load_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].path.ends_with("deep.rhai"));
    assert!(
        failures[0].error.to_lowercase().contains("complex") || failures[0].error.contains("deep"),
        "{}",
        failures[0].error
    );
    let client = server.client().await;
    assert_eq!(
        call(&client, "shallow", Value::from(3))
            .await
            .expect_value(),
        Value::from(3)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_cannot_eval_or_import() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[
        ("evil_eval.rhai", r#"fn execute(x) { eval("40 + 2") }"#),
        (
            "evil_import.rhai",
            r#"import "/etc/passwd" as p; fn execute(x) { x }"#,
        ),
    ]);
    let worker = start(&server, dir.path(), RhaiConfig::default()).await;
    let mut failed: Vec<_> = worker
        .load_failures()
        .iter()
        .map(|f| f.error.clone())
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.iter().all(|e| e.contains("load failed")),
        "{failed:?}"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn top_level_statements_run_once_at_load_not_per_call() {
    let server = NatsServer::start();
    // If the top level ran per call it would trip the operation limit on every request.
    let dir = plugins_dir(&[(
        "heavy_top.rhai",
        "let t = 0; for i in 0..3000 { t += i; } fn entry(x) { x + 1 } entry",
    )]);
    let rhai = RhaiConfig {
        max_operations: 10_000,
        ..RhaiConfig::default()
    };
    let worker = start(&server, dir.path(), rhai).await;
    let client = server.client().await;
    for i in 0..5 {
        assert_eq!(
            call(&client, "heavy_top", Value::from(i))
                .await
                .expect_value(),
            Value::from(i + 1)
        );
    }
    worker.shutdown().await.expect("drains");
}
