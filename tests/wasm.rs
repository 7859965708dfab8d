//! WASM plugins on a real nats-server: the example modules, hostile modules written in WAT
//! (each stopped with the right code while the worker keeps serving), capabilities, the module
//! cache, fresh instances and plugin-to-plugin calls.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mofa_bus::plugin::{AgentPlugin, SandboxPool};
use mofa_bus::wasm::{Manifest, WasmConfig, WasmPlugin, WasmRuntime};
use mofa_bus::wire::Value;

use common::wat_module as module;

/// `(ptr << 32) | len` of the input: return the input as the output.
const ECHO: &str = "(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))";

fn hostile() -> Vec<(String, String)> {
    let files = [
        ("wat_echo", module(ECHO, "")),
        ("spin", module("(loop $l (br $l)) (unreachable)", "")),
        (
            "grow_bomb",
            module("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)", ""),
        ),
        (
            "recurse",
            module(
                "(i64.extend_i32_u (call $down (i32.const 0)))",
                "(func $down (param i32) (result i32) (i32.add (i32.const 1) (call $down (local.get 0))))",
            ),
        ),
        ("trap", module("(unreachable)", "")),
        ("divide", module("(i64.extend_i32_u (i32.div_u (i32.const 1) (i32.sub (local.get $len) (local.get $len))))", "")),
        // Offset 0xFFFF0, 16 bytes: past the single 64 KiB page.
        ("out_of_bounds", module("(i64.const 0x000FFFF000000010)", "")),
        // Length 4 GiB - 1 from offset 0.
        ("giant_length", module("(i64.const 0x00000000FFFFFFFF)", "")),
        // A buffer holding 0xc1, which is not MessagePack.
        ("garbage", module("(i32.store8 (i32.const 100) (i32.const 0xc1)) (i64.const 0x0000006400000001)", "")),
        // 1000 bytes of zeros (1000 MessagePack zeros: not one value, but first too big).
        ("big_output", module("(i64.const 0x00000000000003E8)", "")),
        // A fresh instance per request: this counter is 1 on every call.
        (
            "counter",
            module(
                "(global.set $count (i32.add (global.get $count) (i32.const 1))) (i32.store8 (i32.const 200) (global.get $count)) (i64.const 0x000000C800000001)",
                "(global $count (mut i32) (i32.const 0))",
            ),
        ),
        (
            "uses_wasi",
            module(ECHO, r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#),
        ),
        ("no_alloc", r#"(module (memory (export "memory") 1) (func (export "mofa_handle") (param i32 i32) (result i64) (i64.const 0)))"#.to_string()),
    ];
    files
        .into_iter()
        .map(|(n, m)| (format!("{n}.wasm"), m))
        .collect()
}

async fn start_with(
    server: &NatsServer,
    files: &[(String, String)],
    wasm: WasmConfig,
) -> (mofa_bus::worker::Worker, tempfile::TempDir) {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    serve(server, &refs, |c| c.wasm = wasm).await
}

async fn expect(
    client: &async_nats::Client,
    plugin: &str,
    code: u16,
    needle: &str,
    within: Duration,
) {
    expect_error(client, plugin, Value::from("x"), code, needle, within).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_modules_serve_over_the_bus() {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    assert!(
        worker.load_failures().is_empty(),
        "{:?}",
        worker.load_failures()
    );
    let client = server.client().await;
    for (price, tier, expected) in [
        (Value::from(100), "gold", 80.0),
        (Value::F64(50.0), "silver", 45.0),
        (Value::from(100), "bronze", 100.0),
    ] {
        let input = map(&[("price", price), ("customer_tier", Value::from(tier))]);
        assert_eq!(
            call(&client, "discount_wasm", input).await.expect_value(),
            Value::F64(expected)
        );
    }
    for bad in [
        map(&[
            ("price", Value::from("ten")),
            ("customer_tier", Value::from("gold")),
        ]),
        map(&[("customer_tier", Value::from("gold"))]),
        Value::from(7),
    ] {
        assert_eq!(call(&client, "discount_wasm", bad).await.code(), Some(400));
    }
    let out = call(
        &client,
        "wordcount",
        map(&[("text", Value::from("the cat and the hat\nand the bat"))]),
    )
    .await
    .expect_value();
    assert_eq!(out["words"], Value::from(8));
    assert_eq!(out["lines"], Value::from(2));
    // `top` comes from the manifest's [config] (3) through the get_config capability.
    assert_eq!(
        out["top"],
        Value::Array(vec![
            Value::Array(vec![Value::from("the"), Value::from(3)]),
            Value::Array(vec![Value::from("and"), Value::from(2)]),
            Value::Array(vec![Value::from("bat"), Value::from(1)]),
        ])
    );
    let missing = call(&client, "wordcount", map(&[("words", Value::from(1))])).await;
    assert_eq!(missing.code(), Some(400));
    assert!(missing.message().contains("text"), "{missing:?}");
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_modules_get_the_right_code_and_the_worker_keeps_serving() {
    let server = NatsServer::start();
    let mut files = hostile();
    files.push((
        "grow_bomb.toml".into(),
        "[limits]\nmax_memory_mb = 2\n".into(),
    ));
    files.push((
        "big_output.toml".into(),
        "[limits]\nmax_output_bytes = 100\n".into(),
    ));
    let (worker, _dir) = start_with(&server, &files, WasmConfig::default()).await;
    let client = server.client().await;
    let within = Duration::from_secs(3);

    expect(
        &client,
        "spin",
        413,
        "fuel limit of 100000000 exhausted",
        within,
    )
    .await;
    expect(
        &client,
        "grow_bomb",
        413,
        "memory cap of 2 MiB exceeded",
        within,
    )
    .await;
    expect(&client, "recurse", 413, "stack", within).await;
    expect(&client, "trap", 500, "unreachable", within).await;
    expect(&client, "divide", 500, "divide by zero", within).await;
    expect(&client, "out_of_bounds", 500, "bad ABI output", within).await;
    expect(&client, "giant_length", 500, "bad ABI output", within).await;
    expect(&client, "garbage", 500, "bad ABI output", within).await;
    expect(
        &client,
        "big_output",
        413,
        "exceeds the limit of 100 bytes",
        within,
    )
    .await;

    for i in 0..3 {
        assert_eq!(
            call(&client, "counter", Value::Nil).await.expect_value(),
            Value::from(1),
            "call {i} saw another call's state"
        );
    }
    assert_eq!(
        call(&client, "wat_echo", Value::from("still serving"))
            .await
            .expect_value(),
        Value::from("still serving")
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadline_stops_a_spinning_module_with_408() {
    let server = NatsServer::start();
    let mut files = hostile();
    // Fuel enough for minutes: only the clock stops it.
    files.push((
        "spin.toml".into(),
        "[limits]\nfuel = 1000000000000000\ntimeout_ms = 200\n".into(),
    ));
    let (worker, _dir) = start_with(&server, &files, WasmConfig::default()).await;
    let client = server.client().await;
    let started = Instant::now();
    expect(
        &client,
        "spin",
        408,
        "deadline of 200 ms",
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "stopped before its deadline"
    );
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
        call(&client, "wat_echo", Value::from(1))
            .await
            .expect_value(),
        Value::from(1)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_wide_limits_apply_without_a_manifest() {
    let server = NatsServer::start();
    let wasm = WasmConfig {
        fuel: 10_000,
        max_memory_mb: 1,
        max_output_bytes: 10,
        ..WasmConfig::default()
    };
    let (worker, _dir) = start_with(&server, &hostile(), wasm).await;
    let client = server.client().await;
    let within = Duration::from_secs(3);
    expect(
        &client,
        "spin",
        413,
        "fuel limit of 10000 exhausted",
        within,
    )
    .await;
    expect(
        &client,
        "grow_bomb",
        413,
        "memory cap of 1 MiB exceeded",
        within,
    )
    .await;
    expect(
        &client,
        "big_output",
        413,
        "exceeds the limit of 10 bytes",
        within,
    )
    .await;
    assert_eq!(
        call(&client, "wat_echo", Value::from(5))
            .await
            .expect_value(),
        Value::from(5)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_or_ungranted_imports_and_missing_exports_fail_to_load_by_name() {
    let server = NatsServer::start();
    // MessagePack int64: 0xd3 then the value big-endian, byte by byte.
    let store_be: String = (0..8)
        .map(|i| {
            format!(
                "(i64.store8 (i32.const {}) (i64.shr_u (local.get $t) (i64.const {})))",
                300 + i,
                56 - 8 * i
            )
        })
        .collect();
    let uses_now = module(
        &format!("(local $t i64) (local.set $t (call $now)) (i32.store8 (i32.const 299) (i32.const 0xd3)) {store_be} (i64.const 0x0000012B00000009)"),
        r#"(import "mofa" "now" (func $now (result i64)))"#,
    );
    let files = vec![
        (
            "uses_wasi.wasm".to_string(),
            hostile()
                .into_iter()
                .find(|(n, _)| n == "uses_wasi.wasm")
                .map(|(_, m)| m)
                .unwrap_or_default(),
        ),
        (
            "no_alloc.wasm".to_string(),
            hostile()
                .into_iter()
                .find(|(n, _)| n == "no_alloc.wasm")
                .map(|(_, m)| m)
                .unwrap_or_default(),
        ),
        ("clock_denied.wasm".to_string(), uses_now.clone()),
        ("clock.wasm".to_string(), uses_now),
        (
            "clock.toml".to_string(),
            "capabilities = [\"now\"]\n".to_string(),
        ),
        ("overreach.wasm".to_string(), module(ECHO, "")),
        (
            "overreach.toml".to_string(),
            "[limits]\nmax_memory_mb = 100000\n".to_string(),
        ),
    ];
    let (worker, _dir) = start_with(&server, &files, WasmConfig::default()).await;
    let error = |name: &str| {
        worker
            .load_failures()
            .iter()
            .find(|f| f.path.file_stem().is_some_and(|s| s == name))
            .map(|f| f.error.clone())
            .unwrap_or_else(|| panic!("{name} should have failed to load"))
    };
    assert!(
        error("uses_wasi").contains("wasi_snapshot_preview1::fd_write"),
        "{}",
        error("uses_wasi")
    );
    assert!(
        error("no_alloc").contains("mofa_alloc"),
        "{}",
        error("no_alloc")
    );
    let denied = error("clock_denied");
    assert!(
        denied.contains("mofa::now") && denied.contains("does not grant"),
        "{denied}"
    );
    assert!(
        error("overreach").contains("ceiling"),
        "{}",
        error("overreach")
    );
    assert_eq!(
        worker.load_failures().len(),
        4,
        "{:?}",
        worker.load_failures()
    );

    // With the grant the same module runs and sees the host clock.
    let client = server.client().await;
    let now = call(&client, "clock", Value::Nil).await.expect_value();
    let now = now.as_i64().expect("an integer");
    let host = mofa_bus::wire::unix_ms() as i64;
    assert!(
        (host - now).abs() < 60_000,
        "guest clock {now} vs host {host}"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_to_one_module_each_get_their_own_answer() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let calls: Vec<_> = (0..128)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let input = map(&[
                    ("price", Value::from(i)),
                    ("customer_tier", Value::from("silver")),
                ]);
                call(&client, "discount_wasm", input).await
            })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let out = c.await.expect("joins").expect_value();
        let expected = i as f64 * 0.9;
        assert!(
            (out.as_f64().expect("float") - expected).abs() < 1e-9,
            "{i}: {out}"
        );
    }
    bus.shutdown().await;
}

/// Calls the plugin named in its input's first 64 bytes? No: a fixed name, forwarding its input.
fn forwarder(target: &str) -> String {
    let name_len = target.len();
    module(
        &format!("(call $call_plugin (i32.const 512) (i32.const {name_len}) (local.get $ptr) (local.get $len))"),
        &format!(
            r#"(import "mofa" "call_plugin" (func $call_plugin (param i32 i32 i32 i32) (result i64)))
  (data (i32.const 512) "{target}")"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_plugin_reaches_local_and_remote_plugins_and_stops_loops() {
    let server = NatsServer::start();
    // Worker A: forwarders. Worker B (another process's stand-in): a Rhai plugin only it serves.
    let files_a = vec![
        ("to_native.wasm".to_string(), forwarder("discount_native")),
        (
            "to_native.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
        ("to_remote.wasm".to_string(), forwarder("only_on_b")),
        (
            "to_remote.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
        ("loop.wasm".to_string(), forwarder("loop")),
        (
            "loop.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
        (
            "to_nobody.wasm".to_string(),
            forwarder("nobody_serves_this"),
        ),
        (
            "to_nobody.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
    ];
    let (a, _dir_a) = start_with(&server, &files_a, WasmConfig::default()).await;
    let dir_b = plugins_dir(&[("only_on_b.rhai", "fn execute(x) { x.price * 2 }")]);
    let b = worker(config(&server, dir_b.path())).await;
    let client = server.client().await;

    let input = map(&[
        ("price", Value::from(100)),
        ("customer_tier", Value::from("gold")),
    ]);
    assert_eq!(
        call(&client, "to_native", input.clone())
            .await
            .expect_value(),
        Value::F64(80.0)
    );
    assert_eq!(
        call(&client, "to_remote", input.clone())
            .await
            .expect_value(),
        Value::from(200)
    );
    let bad = call(&client, "to_native", Value::from("nope")).await;
    assert_eq!(
        bad.code(),
        Some(400),
        "the callee's error passes through: {bad:?}"
    );

    let started = Instant::now();
    let looped = call(&client, "loop", Value::Nil).await;
    assert_eq!(looped.code(), Some(413), "{looped:?}");
    assert!(
        looped.message().contains("call depth limit of 8"),
        "{looped:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let nobody = call(&client, "to_nobody", Value::Nil).await;
    assert_eq!(nobody.code(), Some(503), "{nobody:?}");
    assert!(
        nobody
            .message()
            .contains("no worker serves plugin nobody_serves_this"),
        "{nobody:?}"
    );
    a.shutdown().await.expect("drains");
    b.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_cache_is_keyed_by_content_so_v1_v2_v1_runs_v1() {
    let runtime = WasmRuntime::new(WasmConfig::default(), SandboxPool::new(2)).expect("runtime");
    let version = |n: u8| {
        module(
            &format!("(i32.store8 (i32.const 200) (i32.const {n})) (i64.const 0x000000C800000001)"),
            "",
        )
    };
    for (n, expected_cached) in [(1u8, 1usize), (2, 2), (1, 2)] {
        serve_version(&runtime, n).await;
        assert_eq!(runtime.cached_modules(), expected_cached);
    }
    let a = WasmPlugin::new(
        "a",
        version(1).into_bytes(),
        Manifest::default(),
        runtime.clone(),
    );
    let b = WasmPlugin::new(
        "b",
        version(1).into_bytes(),
        Manifest::default(),
        runtime.clone(),
    );
    a.load().await.expect("loads");
    b.load().await.expect("loads");
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(runtime.cached_modules(), 2, "identical bytes compile once");
    let _ = Arc::clone(&runtime);
}

/// Loads a module answering `n` as plugin `versioned` and checks it serves `n`.
async fn serve_version(runtime: &Arc<WasmRuntime>, n: u8) {
    let bytes = module(
        &format!("(i32.store8 (i32.const 200) (i32.const {n})) (i64.const 0x000000C800000001)"),
        "",
    );
    let plugin = WasmPlugin::new(
        "versioned",
        bytes.into_bytes(),
        Manifest::default(),
        runtime.clone(),
    );
    plugin.load().await.expect("loads");
    assert_eq!(
        plugin.execute(Value::Nil).await,
        Ok(Value::from(n)),
        "serving v{n}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_cache_is_bounded_and_a_rollback_still_runs_the_old_revision() {
    // No room beyond the newest module: every other one is forgotten.
    let config = WasmConfig {
        module_cache_mb: 0,
        ..WasmConfig::default()
    };
    let runtime = WasmRuntime::new(config, SandboxPool::new(2)).expect("runtime");
    for n in [1u8, 2, 3, 4, 1] {
        serve_version(&runtime, n).await;
        assert_eq!(
            runtime.cached_modules(),
            1,
            "the cache holds only the newest"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_instance_pool_answers_503() {
    let server = NatsServer::start();
    // One instance slot: a module calling another module needs two.
    let files = vec![
        ("wat_echo.wasm".to_string(), module(ECHO, "")),
        ("to_echo.wasm".to_string(), forwarder("wat_echo")),
        (
            "to_echo.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
    ];
    let wasm = WasmConfig {
        max_instances: 1,
        ..WasmConfig::default()
    };
    let (worker, _dir) = start_with(&server, &files, wasm).await;
    let client = server.client().await;
    assert_eq!(
        call(&client, "wat_echo", Value::from(1))
            .await
            .expect_value(),
        Value::from(1)
    );
    let nested = call(&client, "to_echo", Value::from(1)).await;
    assert_eq!(nested.code(), Some(503), "{nested:?}");
    assert!(
        nested.message().contains("no wasm instance slot free"),
        "{nested:?}"
    );
    worker.shutdown().await.expect("drains");
}

#[test]
fn compiled_modules_are_kept_on_disk_so_a_restart_does_not_compile_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("wasm-cache");
    let bytes = std::fs::read(repo_plugins().join("discount_wasm.wasm")).expect("module");
    let start = || {
        let runtime =
            WasmRuntime::new(WasmConfig::default(), SandboxPool::new(1)).expect("runtime");
        runtime.set_disk_cache(cache.clone());
        runtime
    };
    // First start: compiled, and written.
    let first = start();
    first.module("discount_wasm", &bytes).expect("compiles");
    assert_eq!(first.disk_cache_counts(), Some((0, 1)));
    let files: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache directory made")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private to the worker's user: {mode:o}");
    }
    // A restart loads it.
    let second = start();
    second.module("discount_wasm", &bytes).expect("loads");
    assert_eq!(second.disk_cache_counts(), Some((1, 0)));
    // Different bytes are never served from another module's image.
    let mut other = bytes.clone();
    other.extend_from_slice(&[0, 4, 3, b'm', b'o', b'f']); // a custom section
    second.module("other", &other).expect("compiles");
    assert_eq!(second.disk_cache_counts(), Some((1, 1)));
    // A damaged image is dropped and the module compiled again.
    std::fs::write(&files[0], b"not an image").expect("damaged");
    let third = start();
    third
        .module("discount_wasm", &bytes)
        .expect("compiles again");
    assert_eq!(third.disk_cache_counts(), Some((0, 1)));
    let fourth = start();
    fourth.module("discount_wasm", &bytes).expect("loads");
    assert_eq!(fourth.disk_cache_counts(), Some((1, 0)), "rewritten");
}

/// A module asking the host whether `pattern` matches its input string (the MessagePack
/// string's bytes after a one-byte fixstr header): replies `true`/`false`, or passes the
/// host's error on.
fn matcher(pattern: &str) -> String {
    module(
        &format!(
            "(local $r i64)
    (local.set $r (call $matches (i32.const 512) (i32.const {})
      (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))))
    (if (result i64) (i64.lt_s (local.get $r) (i64.const 0))
      (then (local.get $r))
      (else
        (i32.store8 (i32.const 300) (i32.add (i32.const 0xc2) (i32.wrap_i64 (local.get $r))))
        (i64.const 0x0000012C00000001)))",
            pattern.len()
        ),
        &format!(
            r#"(import "mofa" "matches" (func $matches (param i32 i32 i32 i32) (result i64)))
  (data (i32.const 512) "{pattern}")"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_matches_capability_runs_patterns_in_the_host_within_max_regex_bytes() {
    let server = NatsServer::start();
    let granted = "capabilities = [\"matches\"]\n".to_string();
    let files = vec![
        ("has_bs.wasm".to_string(), matcher("b+c")),
        ("has_bs.toml".to_string(), granted.clone()),
        ("too_long.wasm".to_string(), matcher("b{1,3}cdefgh")),
        ("too_long.toml".to_string(), granted.clone()),
        ("invalid.wasm".to_string(), matcher("(b")),
        ("invalid.toml".to_string(), granted),
        ("ungranted.wasm".to_string(), matcher("b")),
    ];
    let wasm = WasmConfig {
        max_regex_bytes: 8,
        ..WasmConfig::default()
    };
    let (worker, _dir) = start_with(&server, &files, wasm).await;
    let ungranted = worker
        .load_failures()
        .iter()
        .find(|f| f.path.ends_with("ungranted.wasm"))
        .expect("a module importing matches without the grant is refused");
    assert!(
        ungranted
            .error
            .contains("add capabilities = [\"matches\"] to ungranted.toml"),
        "{}",
        ungranted.error
    );
    let client = server.client().await;
    for _ in 0..3 {
        // Every call is a fresh instance; the pattern stays compiled in the host.
        assert_eq!(
            call(&client, "has_bs", Value::from("abbbc"))
                .await
                .expect_value(),
            Value::from(true)
        );
        assert_eq!(
            call(&client, "has_bs", Value::from("abd"))
                .await
                .expect_value(),
            Value::from(false)
        );
    }
    let long = call(&client, "too_long", Value::from("bcdefgh")).await;
    assert_eq!(long.code(), Some(413), "{long:?}");
    assert!(
        long.message()
            .contains("pattern of 12 bytes exceeds the limit of 8 bytes (wasm.max_regex_bytes)"),
        "{long:?}"
    );
    let invalid = call(&client, "invalid", Value::from("b")).await;
    assert_eq!(invalid.code(), Some(400), "{invalid:?}");
    assert!(invalid.message().contains("invalid pattern"), "{invalid:?}");
    // The worker keeps serving.
    assert_eq!(
        call(&client, "has_bs", Value::from("bc"))
            .await
            .expect_value(),
        Value::from(true)
    );
    worker.shutdown().await.expect("drains");
}

/// A module's call starts where the request arrived; one that reaches a host function that
/// acts (`call_plugin`) or runs past its inline fuel moves to a sandbox thread and runs again
/// from the start, so what it does happens once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modules_that_start_inline_act_once_per_request() {
    let server = NatsServer::start();
    // Forwards, then spins about 8,000,000 fuel (past the inline fuel of 2,000,000): were the
    // forward made inline, the spin would send the call to the pool to forward again.
    let forward_then_spin = module(
        "(local $i i32) (local $r i64)
    (local.set $r (call $call_plugin (i32.const 512) (i32.const 5) (local.get $ptr) (local.get $len)))
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 1000000))))
    (local.get $r)",
        r#"(import "mofa" "call_plugin" (func $call_plugin (param i32 i32 i32 i32) (result i64)))
  (data (i32.const 512) "count")"#,
    );
    let files = vec![
        ("to_count.wasm".to_string(), forwarder("count")),
        (
            "to_count.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
        ("spin_count.wasm".to_string(), forward_then_spin),
        (
            "spin_count.toml".to_string(),
            "capabilities = [\"call_plugin\"]\n".to_string(),
        ),
        (
            "count.rhai".to_string(),
            "fn execute(x) { let n = state_get(\"n\") ?? 0; state_set(\"n\", n + 1); n }"
                .to_string(),
        ),
    ];
    let (worker, _dir) = start_with(&server, &files, WasmConfig::default()).await;
    let client = server.client().await;
    let mut expected = 0i64;
    for plugin in ["to_count", "spin_count", "to_count"] {
        for _ in 0..60 {
            let reply = call(&client, plugin, Value::Nil).await;
            assert_eq!(
                reply.expect_value(),
                Value::from(expected),
                "{plugin}: one call per request"
            );
            expected += 1;
        }
    }
    worker.shutdown().await.expect("drains");
}

/// Calls that start inline run one after another on the thread that admits requests, so a
/// module whose calls are long goes to the sandbox threads. Long is judged by the fuel a call
/// used, which no busy host changes, and by the clock only past `LONG_CALL` (1 ms), for work
/// fuel does not count, such as a bulk memory fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_whose_calls_use_much_fuel_or_time_leave_the_inline_path() {
    let runtime = WasmRuntime::new(WasmConfig::default(), SandboxPool::new(2)).expect("runtime");
    let plugin = |name: &str, handle: String| {
        WasmPlugin::new(
            name,
            module(&handle, "").into_bytes(),
            Manifest::default(),
            runtime.clone(),
        )
    };
    // Bytes filled with one `memory.fill`: a few units of fuel, however long it takes.
    let fill = |bytes: u32| {
        format!(
            "(drop (memory.grow (i32.const {pages}))) (memory.fill (i32.const 65536) (i32.const 1) (i32.const {bytes})) {ECHO}",
            pages = bytes.div_ceil(65536)
        )
    };
    let cases = [
        // A few units of fuel and microseconds.
        ("echoes", ECHO.to_string(), true),
        // 150,000 rounds of 6 instructions: past SHORT_FUEL (500,000), under the inline fuel
        // (2,000,000).
        (
            "counts",
            format!(
                "(local $i i32) (local.set $i (i32.const 150000))
    (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $l (local.get $i)))
    {ECHO}"
            ),
            false,
        ),
        // 48 MiB filled: milliseconds, little fuel. (A fill that takes some hundreds of
        // microseconds stays inline, but a busy test host can stretch it past LONG_CALL.)
        ("fills_48mib", fill(48 << 20), false),
    ];
    for (name, handle, stays_inline) in cases {
        let plugin = plugin(name, handle);
        plugin.load().await.expect("loads");
        assert!(plugin.starts_inline(), "{name}: open before its first call");
        for _ in 0..16 {
            assert_eq!(
                plugin.execute(Value::from(7)).await,
                Ok(Value::from(7)),
                "{name}"
            );
        }
        assert_eq!(
            plugin.starts_inline(),
            stays_inline,
            "{name}: whether its calls still start inline after 16"
        );
    }
}
