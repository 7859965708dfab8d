//! Guests in three languages and WASI preview 1 on a real nats-server: the Rust, C and
//! AssemblyScript discount modules answer every input alike, errors included; a module built
//! for `wasm32-wasip1` runs with the WASI grant and is refused, naming the import, without it.

mod common;

use std::time::Duration;

use common::*;
use mofa_bus::wasm::WasmConfig;
use mofa_bus::wire::Value;

const GUESTS: [&str; 3] = ["discount_wasm", "discount_c", "discount_as"];

fn input(price: Value, tier: Value) -> Value {
    map(&[("price", price), ("customer_tier", tier)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_c_and_assemblyscript_guests_answer_alike() {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    assert!(
        worker.load_failures().is_empty(),
        "{:?}",
        worker.load_failures()
    );
    let client = server.client().await;
    let gold = || Value::from("gold");
    let cases = vec![
        input(Value::from(100), gold()),
        input(Value::F64(50.0), Value::from("silver")),
        input(Value::F32(12.5), Value::from("silver")),
        input(Value::from(100), Value::from("bronze")),
        input(Value::from(0), gold()),
        input(Value::F64(-0.0), gold()),
        input(Value::from(200u8), gold()),
        input(Value::from(70_000u32), gold()),
        input(Value::from(5_000_000_000u64), gold()),
        input(Value::from(u64::MAX), Value::from("silver")),
        input(Value::F64(0.1), gold()),
        input(Value::F64(1e308), Value::from("silver")),
        input(Value::from(-1), gold()),
        input(Value::from(i64::MIN), gold()),
        input(Value::F64(-0.5), gold()),
        input(Value::F64(f64::INFINITY), gold()),
        input(Value::F64(f64::NAN), gold()),
        input(Value::from("ten"), gold()),
        input(Value::Nil, gold()),
        input(Value::Boolean(true), gold()),
        input(Value::from(100), Value::from(7)),
        input(Value::from(100), Value::Nil),
        input(Value::from(100), Value::Binary(b"gold".to_vec())),
        input(Value::from(100), Value::from("GOLD")),
        input(Value::from(100), Value::from("gold ")),
        input(Value::from(100), Value::from("")),
        input(Value::from(100), Value::from("s".repeat(300))),
        input(Value::from(100), Value::from("gölð")),
        map(&[("customer_tier", gold())]),
        map(&[("price", Value::from(10))]),
        map(&[]),
        // Keys and values of every shape before the ones that count must be skipped whole.
        map(&[
            (
                "notes",
                Value::Array(vec![
                    Value::Map(vec![(Value::from(1), Value::Array(vec![Value::Nil]))]),
                    Value::Binary(vec![0; 300]),
                    Value::Ext(5, vec![1, 2, 3]),
                    Value::F32(1.0),
                    Value::from(-70_000),
                ]),
            ),
            ("price", Value::from(40)),
            ("extra", Value::from("x".repeat(70_000))),
            ("customer_tier", Value::from("silver")),
        ]),
        Value::Map(vec![
            (Value::from(1), Value::from("price")),
            (Value::from("price"), Value::from(10)),
            (Value::from("customer_tier"), gold()),
        ]),
        // The first of two equal keys counts.
        Value::Map(vec![
            (Value::from("price"), Value::from(10)),
            (Value::from("price"), Value::from("ten")),
            (Value::from("customer_tier"), gold()),
        ]),
        Value::Array(vec![Value::from("price"), Value::from(10)]),
        Value::from(7),
        Value::from("price"),
        Value::Nil,
    ];
    let mut ok = 0;
    for case in &cases {
        let replies = [
            call(&client, GUESTS[0], case.clone()).await,
            call(&client, GUESTS[1], case.clone()).await,
            call(&client, GUESTS[2], case.clone()).await,
        ];
        for (guest, reply) in GUESTS.iter().zip(&replies).skip(1) {
            assert_eq!(
                format!("{reply:?}"),
                format!("{:?}", replies[0]),
                "{guest} and {} differ on {case}",
                GUESTS[0]
            );
        }
        if replies[0].code().is_none() {
            ok += 1;
        }
    }
    // Both outcomes are covered.
    assert!(
        ok >= 10 && ok < cases.len() - 10,
        "{ok} of {} succeeded",
        cases.len()
    );
    assert_eq!(
        call(&client, "discount_c", input(Value::from(100), gold()))
            .await
            .expect_value(),
        Value::F64(80.0)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wasip1_module_runs_with_the_wasi_grant_and_is_refused_without_it() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let first = call(&client, "hello_wasi", map(&[("name", Value::from("ada"))]))
        .await
        .expect_value();
    assert_eq!(first["greeting"], Value::from("hello, ada"));
    let guest_ms = first["unix_ms"].as_i64().expect("unix_ms");
    let host_ms = mofa_bus::wire::unix_ms() as i64;
    assert!(
        (host_ms - guest_ms).abs() < 60_000,
        "guest clock {guest_ms} vs host {host_ms}"
    );
    let second = call(&client, "hello_wasi", map(&[("name", Value::from("ada"))]))
        .await
        .expect_value();
    assert_ne!(
        first["random"], second["random"],
        "each instance draws its own random seed"
    );
    let bad = call(&client, "hello_wasi", map(&[("name", Value::from(1))])).await;
    assert_eq!(bad.code(), Some(400));
    bus.worker.shutdown().await.expect("drains");

    // The same module without its manifest: refused at load, naming the import and the fix.
    let bytes = std::fs::read(repo_plugins().join("hello_wasi.wasm")).expect("module");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hello_wasi.wasm"), bytes).expect("copied");
    let worker = common::worker(config(&bus.server, dir.path())).await;
    let failure = worker
        .load_failures()
        .iter()
        .map(|f| f.error.clone())
        .next()
        .expect("hello_wasi is refused");
    assert!(
        failure.contains("wasi_snapshot_preview1::") && failure.contains("wasi = true"),
        "{failure}"
    );
    worker.shutdown().await.expect("drains");
}

/// A module with the ABI and a bump allocator; `handle` is the body of `mofa_handle`, `extra`
/// more module fields. The output is one byte at offset 200 (a MessagePack fixint).
fn module(handle: &str, extra: &str) -> String {
    wat_module(
        &format!("{handle}\n    (i64.const 0x000000C800000001)"),
        &format!("{extra}\n  (func $out (param i32) (i32.store8 (i32.const 200) (local.get 0)))"),
    )
}

/// Stores the i32 on the stack as the one-byte output.
const STORE: &str = "(call $out)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wasi_grant_has_no_files_or_sockets_and_exit_ends_the_request() {
    let server = NatsServer::start();
    let wasi = "wasi = true\n".to_string();
    let import = |name: &str, params: &str| {
        format!(
            r#"(import "wasi_snapshot_preview1" "{name}" (func ${name} (param {params}) (result i32)))"#
        )
    };
    let files = vec![
        // path_open on the first would-be preopened directory: no such descriptor.
        (
            "opens_file.wasm".to_string(),
            module(
                &format!("(call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)) {STORE}"),
                &import("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32"),
            ),
        ),
        ("opens_file.toml".to_string(), wasi.clone()),
        (
            "sends.wasm".to_string(),
            module(
                &format!("(call $sock_send (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)) {STORE}"),
                &import("sock_send", "i32 i32 i32 i32 i32"),
            ),
        ),
        ("sends.toml".to_string(), wasi.clone()),
        // fd_write of 2 bytes to stdout succeeds; the byte count lands at offset 300.
        (
            "prints.wasm".to_string(),
            module(
                &format!("(i32.store (i32.const 400) (i32.const 500)) (i32.store (i32.const 404) (i32.const 2)) (i32.store16 (i32.const 500) (i32.const 0x6968)) (drop (call $fd_write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 300))) (i32.load (i32.const 300)) {STORE}"),
                &import("fd_write", "i32 i32 i32 i32"),
            ),
        ),
        ("prints.toml".to_string(), wasi.clone()),
        (
            "writes_fd5.wasm".to_string(),
            module(
                &format!("(call $fd_write (i32.const 5) (i32.const 400) (i32.const 0) (i32.const 300)) {STORE}"),
                &import("fd_write", "i32 i32 i32 i32"),
            ),
        ),
        ("writes_fd5.toml".to_string(), wasi.clone()),
        (
            "exits.wasm".to_string(),
            module(
                "(call $proc_exit (i32.const 3))",
                r#"(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#,
            ),
        ),
        ("exits.toml".to_string(), wasi.clone()),
        // A reactor's _initialize runs before each request.
        (
            "reactor.wasm".to_string(),
            module(
                &format!("(global.get $ready) {STORE}"),
                r#"(global $ready (mut i32) (i32.const 0))
                   (func (export "_initialize") (global.set $ready (i32.const 42)))"#,
            ),
        ),
        ("reactor.toml".to_string(), wasi.clone()),
        (
            "invents.wasm".to_string(),
            module(
                &format!("(call $fs_mount (i32.const 0)) {STORE}"),
                &import("fs_mount", "i32"),
            ),
        ),
        ("invents.toml".to_string(), wasi),
    ];
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let dir = plugins_dir(&refs);
    let worker = worker(mofa_bus::config::WorkerConfig {
        wasm: WasmConfig::default(),
        ..config(&server, dir.path())
    })
    .await;
    let failures: Vec<String> = worker
        .load_failures()
        .iter()
        .map(|f| f.error.clone())
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("wasi_snapshot_preview1::fs_mount"),
        "{failures:?}"
    );
    let client = server.client().await;
    const EBADF: i64 = 8;
    for plugin in ["opens_file", "sends", "writes_fd5"] {
        let out = call(&client, plugin, Value::Nil).await.expect_value();
        assert_eq!(out.as_i64(), Some(EBADF), "{plugin}");
    }
    assert_eq!(
        call(&client, "prints", Value::Nil)
            .await
            .expect_value()
            .as_i64(),
        Some(2)
    );
    assert_eq!(
        call(&client, "reactor", Value::Nil)
            .await
            .expect_value()
            .as_i64(),
        Some(42)
    );
    expect_error(
        &client,
        "exits",
        Value::Nil,
        500,
        "proc_exit(3)",
        Duration::from_secs(2),
    )
    .await;
    // The worker keeps serving after the exit.
    assert_eq!(
        call(&client, "reactor", Value::Nil)
            .await
            .expect_value()
            .as_i64(),
        Some(42)
    );
    worker.shutdown().await.expect("drains");
}
