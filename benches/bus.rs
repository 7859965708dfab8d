//! Benchmarks (not tests): the worker over the bus against a bare async-nats echo responder,
//! measured in the same run on the same nats-server, plus in-process per-call times.
//!
//! Run with `cargo bench --bench bus`. Prints, for each target: sequential round-trip p50/p99,
//! throughput at 1, 64 and 256 requests in flight, each as a ratio to the bare echo, and the
//! responder process's CPU time per request (from /proc) against the bare responder's.
//! `MOFA_BENCH_REQUESTS` scales the request counts (default 20000 per throughput run).
//! `in-process`, `over-the-bus`, `analyze-sales`, `bursts`, `jobs`, `cold-start` or `tracing`
//! as an argument runs only that section; `profile [PLUGIN…]` (not part of the full run) splits a
//! worker's CPU per request by where `perf record`'s samples fall, and `instructions [PLUGIN…]`
//! (not part of the full run either) counts instructions per request under callgrind.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use common::{NatsServer, WorkerProcess};
use futures::StreamExt;
use mofa_bus::rhai::{RhaiConfig, RhaiPlugin, ScriptEngine};
use mofa_bus::wire::{self, Value};

/// The subject the Python baseline worker serves, and its row in the table.
const PYTHON_SUBJECT: &str = "bench.python.discount";
const PYTHON_LABEL: &str = "python worker (nats-py)";

/// Starts `benches/python_worker.py` (the discount rule in plain nats-py), once it says it is
/// ready.
fn python_worker(url: &str) -> std::process::Child {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let child = std::process::Command::new(shared::python())
        .arg(root.join("benches/python_worker.py"))
        .args([url, PYTHON_SUBJECT])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python worker starts");
    shared::wait_ready(child, "the python worker")
}

struct Target {
    label: &'static str,
    subject: String,
    body: Bytes,
    pid: u32,
}

struct Figures {
    p50: Duration,
    p99: Duration,
    throughput: Vec<(usize, f64)>,
    cpu_per_request: Duration,
    /// The responder's context switches per request (thread hand-offs), at 256 in flight.
    switches_per_request: f64,
    /// Share of the responder's CPU spent on sandbox-pool threads, at 256 in flight: near 0
    /// when sandboxed calls run inline.
    sandbox_share: f64,
}

async fn request(client: &Client, subject: &str, body: Bytes) {
    let reply = client
        .request(subject.to_string(), body)
        .await
        .expect("reply");
    assert!(
        reply
            .headers
            .as_ref()
            .is_none_or(|h| h.get(wire::HEADER_ERROR_CODE).is_none()),
        "error reply from {subject}: {:?}",
        reply.headers
    );
}

async fn measure(client: &Client, target: &Target, requests: usize) -> Figures {
    for _ in 0..500 {
        request(client, &target.subject, target.body.clone()).await;
    }
    let mut samples = Vec::with_capacity(requests / 4);
    for _ in 0..requests / 4 {
        let t = Instant::now();
        request(client, &target.subject, target.body.clone()).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];

    let mut throughput = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut switches = 0.0;
    let mut sandbox_share = 0.0;
    for inflight in [1usize, 64, 256] {
        let cpu_before = shared::cpu_ns(target.pid);
        let sandbox_before = shared::sandbox_cpu_ns(target.pid);
        let switches_before = shared::context_switches(target.pid);
        let started = Instant::now();
        load(client, target, inflight, requests).await;
        let elapsed = started.elapsed();
        throughput.push((inflight, requests as f64 / elapsed.as_secs_f64()));
        if inflight == 256 {
            let used = shared::cpu_ns(target.pid) - cpu_before;
            sandbox_share =
                (shared::sandbox_cpu_ns(target.pid) - sandbox_before) as f64 / used.max(1) as f64;
            cpu = Duration::from_nanos(used / requests as u64);
            switches =
                (shared::context_switches(target.pid) - switches_before) as f64 / requests as f64;
        }
    }
    println!("  measured {}", target.label);
    Figures {
        p50,
        p99,
        throughput,
        cpu_per_request: cpu,
        switches_per_request: switches,
        sandbox_share,
    }
}

fn in_process() {
    let input = Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]);
    let n = 200_000u32;

    let engine = Arc::new(ScriptEngine::new(RhaiConfig::default()));
    let source = std::fs::read_to_string(common::repo_plugins().join("discount.rhai"))
        .expect("plugins/discount.rhai");
    let entry = engine.compile("discount", &source).expect("compiles");
    for _ in 0..10_000 {
        engine.call(&entry, input.clone()).expect("runs");
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            engine
                .call(&entry, std::hint::black_box(input.clone()))
                .expect("runs"),
        );
    }
    let rhai = t.elapsed() / n;

    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            mofa_bus::native::discount_apply(std::hint::black_box(&input)).expect("runs"),
        );
    }
    let native = t.elapsed() / n;

    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(std::hint::black_box(input.clone()));
    }
    let clone = t.elapsed() / n;

    // Through the plugin interface, including the hop to the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rhai_through = |engine: Arc<ScriptEngine>| {
        runtime.block_on(async {
            use mofa_bus::plugin::AgentPlugin;
            let plugin = RhaiPlugin::new("discount", source.clone(), engine);
            plugin.load().await.expect("loads");
            let m = 50_000u32;
            for _ in 0..1_000 {
                plugin.execute(input.clone()).await.expect("runs");
            }
            let t = Instant::now();
            for _ in 0..m {
                plugin.execute(input.clone()).await.expect("runs");
            }
            t.elapsed() / m
        })
    };
    let plugin_call = rhai_through(engine.clone());
    let pooled = RhaiConfig {
        inline: false,
        ..RhaiConfig::default()
    };
    let plugin_call_pooled = rhai_through(Arc::new(ScriptEngine::new(pooled)));

    // WASM: a fresh instance per call, with fuel, memory cap and deadline, input encoded and
    // output decoded.
    let wasm_through = |config: mofa_bus::wasm::WasmConfig| {
        runtime.block_on(async {
            use mofa_bus::plugin::{AgentPlugin, SandboxPool};
            use mofa_bus::wasm::{Manifest, WasmPlugin, WasmRuntime};
            let wasm = WasmRuntime::new(config, SandboxPool::new(0)).expect("runtime");
            let bytes = std::fs::read(common::repo_plugins().join("discount_wasm.wasm"))
                .expect("plugins/discount_wasm.wasm");
            let plugin = WasmPlugin::new("discount_wasm", bytes, Manifest::default(), wasm);
            plugin.load().await.expect("loads");
            for _ in 0..10_000 {
                plugin.invoke_blocking(&input).expect("runs");
            }
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(
                    plugin
                        .invoke_blocking(std::hint::black_box(&input))
                        .expect("runs"),
                );
            }
            let direct = t.elapsed() / n;
            let m = 50_000u32;
            let t = Instant::now();
            for _ in 0..m {
                plugin.execute(input.clone()).await.expect("runs");
            }
            (direct, t.elapsed() / m)
        })
    };
    let (wasm_call, wasm_plugin_call) = wasm_through(mofa_bus::wasm::WasmConfig::default());
    let (_, wasm_plugin_call_pooled) = wasm_through(mofa_bus::wasm::WasmConfig {
        inline: false,
        ..Default::default()
    });

    // The MessagePack a WASM request pays beyond the module: the request decoded and encoded
    // again for the guest, the guest's output decoded and encoded again for the reply. Beside
    // it, what handing the guest the raw body would pay instead: a validating scan of the
    // request and of the output (no value built).
    let request = wire::encode(&input);
    let reply = wire::encode(&mofa_bus::native::discount_apply(&input).expect("runs"));
    let t = Instant::now();
    for _ in 0..n {
        let value = wire::decode(std::hint::black_box(&request)).expect("decodes");
        let for_guest = wire::encode(&value);
        let out = wire::decode(std::hint::black_box(&reply)).expect("decodes");
        std::hint::black_box((for_guest, wire::encode(&out)));
    }
    let round_trips = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            scan(std::hint::black_box(&request)) && scan(std::hint::black_box(&reply)),
        );
    }
    let scans = t.elapsed() / n;

    println!();
    println!("in-process, per call (input clone {clone:?} included):");
    println!(
        "  discount (Rhai, engine call incl. value conversion)   {rhai:>10.2?}   target <= 1 µs"
    );
    println!("  discount (Rhai, AgentPlugin::execute)                {plugin_call:>10.2?}   target <= 3 µs");
    println!("  discount (Rhai, AgentPlugin::execute, inline = false) {plugin_call_pooled:>10.2?}   (every call on the sandbox pool)");
    println!("  discount_native                                       {native:>10.2?}");
    println!("  discount_wasm (fresh instance + call, this thread)    {wasm_call:>10.2?}   target <= 6 µs");
    println!("  discount_wasm (AgentPlugin::execute)                  {wasm_plugin_call:>10.2?}   target <= 6 µs");
    println!("  discount_wasm (AgentPlugin::execute, inline = false)  {wasm_plugin_call_pooled:>10.2?}   (every call on the sandbox pool)");
    println!("  discount_wasm MessagePack round trips (2 decodes, 2 encodes) {round_trips:>10.2?}   vs validating scans of the raw bodies {scans:.2?}");
    scripts_in_process(&engine, &input);
}

/// Whether `bytes` is exactly one well-formed MessagePack value, checked without building it.
fn scan(bytes: &[u8]) -> bool {
    use serde::Deserialize;
    let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    serde::de::IgnoredAny::deserialize(&mut deserializer).is_ok()
        && deserializer.position() == bytes.len() as u64
}

/// A plugin caller whose callee answers at once with its input: isolates `call_plugin`'s own
/// cost (value conversion, depth and deadline, waiting on the call's future).
struct InstantEcho;

impl mofa_bus::plugin::PluginCaller for InstantEcho {
    fn call(
        &self,
        _plugin: &str,
        input: Value,
        _context: mofa_bus::plugin::CallContext,
    ) -> futures::future::BoxFuture<'static, Result<Value, mofa_bus::plugin::PluginError>> {
        Box::pin(async move { Ok(input) })
    }
}

/// Entry binding by name against `fn execute(input)`, rule-set evaluation and `call_plugin`,
/// in-process.
fn scripts_in_process(engine: &ScriptEngine, input: &Value) {
    let per_call = |entry: &mofa_bus::rhai::Entry, input: &Value, n: u32| {
        for _ in 0..n / 10 {
            engine.call(entry, input.clone()).expect("runs");
        }
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                engine
                    .call(entry, std::hint::black_box(input.clone()))
                    .expect("runs"),
            );
        }
        t.elapsed() / n
    };
    let n = 200_000u32;
    let by_name = engine
        .compile(
            "calculate_discount",
            r#"fn calculate_discount(price, customer_tier) {
                   if customer_tier == "gold" { price * 0.8 } else { price * 1.0 } }"#,
        )
        .expect("compiles");
    let whole = engine
        .compile(
            "execute",
            r#"fn execute(input) {
                   if input.customer_tier == "gold" { input.price * 0.8 } else { input.price * 1.0 } }"#,
        )
        .expect("compiles");
    let by_name = per_call(&by_name, input, n);
    let whole = per_call(&whole, input, n);

    let source =
        std::fs::read_to_string(common::repo_plugins().join("rules/content_moderation.rhai"))
            .expect("plugins/rules/content_moderation.rhai");
    let rules = engine
        .compile("content_moderation", &source)
        .expect("compiles");
    let count = match &rules.shape {
        mofa_bus::rhai::Shape::Rules(set) => set.rules().len() as u32,
        mofa_bus::rhai::Shape::Function { .. } => 1,
    };
    let message = |text: &str| Value::Map(vec![(Value::from("text"), Value::from(text))]);
    let first_match = per_call(&rules, &message("well damn"), n);
    let no_match = per_call(&rules, &message("see you at noon"), n);

    // call_plugin's own cost: a script passing its input to a callee that answers at once,
    // against the same script returning its input.
    let calls = ScriptEngine::new(RhaiConfig::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    calls.set_caller(Arc::new(InstantEcho), runtime.handle().clone());
    let direct = calls
        .compile("direct", "fn execute(x) { x }")
        .expect("compiles");
    let nested = calls
        .compile("nested", r#"fn execute(x) { call_plugin("echo", x) }"#)
        .expect("compiles");
    let per_call_on = |entry: &mofa_bus::rhai::Entry| {
        let m = 100_000u32;
        for _ in 0..m / 10 {
            calls.call(entry, input.clone()).expect("runs");
        }
        let t = Instant::now();
        for _ in 0..m {
            std::hint::black_box(calls.call(entry, input.clone()).expect("runs"));
        }
        t.elapsed() / m
    };
    let direct = per_call_on(&direct);
    let nested = per_call_on(&nested);

    println!();
    println!("scripts in-process, per call (input clone included):");
    println!("  two parameters bound by name                          {by_name:>10.2?}");
    println!(
        "  fn execute(input), same rule                          {whole:>10.2?}   binding costs {:>+.2} µs (target <= 0.2 µs)",
        (by_name.as_nanos() as f64 - whole.as_nanos() as f64) / 1000.0
    );
    println!("  content_moderation, first rule matches               {first_match:>10.2?}   target <= 2 µs");
    println!(
        "  call_plugin to a callee answering at once             {nested:>10.2?}   overhead {:>+.2} µs over the direct script (target <= 1 µs)",
        (nested.as_nanos() as f64 - direct.as_nanos() as f64) / 1000.0
    );
    println!(
        "  content_moderation, no rule matches ({count} conditions)   {no_match:>10.2?}   {:>8.2?} per rule",
        no_match / count
    );
}

/// Time from `publish` to all three workers serving the new revision (their `completed` reload
/// events), over repeated publishes.
async fn reload_latency(server: &NatsServer, client: &Client) {
    use mofa_bus::config::ReloadConfig;
    use mofa_bus::distribution::{Distribution, ReloadEvent, ReloadStatus, INLINE_LIMIT};
    let empty = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::spawn(server, empty.path(), None))
        .collect();
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let mut events = client
        .subscribe("mofa.events.reload.reload_bench")
        .await
        .expect("subscribes");
    // Wait for the three workers: each answers the Services API.
    let started = Instant::now();
    loop {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.expect("inbox");
        client
            .publish_with_reply("$SRV.PING.mofa", inbox, Bytes::new())
            .await
            .expect("ping");
        let mut seen = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), replies.next()).await
        {
            seen += 1;
        }
        if seen >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "workers did not start"
        );
    }
    let path = sources.path().join("reload_bench.rhai");
    let mut samples = Vec::new();
    for i in 0..60u32 {
        std::fs::write(&path, format!("fn execute(x) {{ {i} }}\n")).expect("write");
        let t = Instant::now();
        let (_, revision) = dist
            .publish_file(&path, None, INLINE_LIMIT)
            .await
            .expect("publish");
        let mut completed = 0;
        while completed < 3 {
            let m = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("reload event in time")
                .expect("event");
            let event: ReloadEvent = rmp_serde::from_slice(&m.payload).expect("event");
            if event.revision == revision && event.status == ReloadStatus::Completed {
                completed += 1;
            }
        }
        samples.push(t.elapsed());
    }
    drop(workers);
    let samples = &mut samples[10..]; // the first publishes warm the workers up
    samples.sort();
    println!();
    println!(
        "hot reload: publish -> all 3 workers serving the new revision, {} publishes: p50 {:.2?}, p99 {:.2?}, max {:.2?}   target p99 <= 100 ms",
        samples.len(),
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    );
}

/// `sales` with `rows` rows (half of them after 2024-01-01), as a script both SQLite and
/// PostgreSQL run.
fn sales_script(rows: usize) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).expect("a date");
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let date = start + chrono::Days::new((i * 730 / rows) as u64);
            format!(
                "({i}, '{date}', 'r{}', 'p{}', {}.{:02})",
                i % 4,
                i % 3,
                10 + i % 900,
                i % 100
            )
        })
        .collect();
    format!(
        "DROP TABLE IF EXISTS sales;\n\
         CREATE TABLE sales (id INTEGER PRIMARY KEY, date DATE NOT NULL, region TEXT NOT NULL, \
         product TEXT NOT NULL, amount NUMERIC(10, 2) NOT NULL);\n\
         INSERT INTO sales (id, date, region, product, amount) VALUES\n{};\n",
        values.join(",\n")
    )
}

/// The docs' `analyze_sales` script over the bus, on SQLite and on PostgreSQL, with 1,000 rows
/// in `sales` (about 500 of them read per request), beside the `database` plugin answering
/// the same query directly.
async fn analyze_sales(server: &NatsServer, client: &Client, requests: usize) {
    use mofa_bus::native::database::Database;
    use mofa_bus::native::DatabaseConfig;
    use sqlx::Connection;
    let admin = std::env::var("MOFA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pg_name = format!("mofa_bench_{}", nuid::next().as_str().to_ascii_lowercase());
    let pg_url = format!(
        "{}/{pg_name}",
        admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
    );
    let mut admin_conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            println!("analyze_sales on PostgreSQL skipped: no PostgreSQL at {admin}: {e}");
            None
        }
    };
    if let Some(conn) = admin_conn.as_mut() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
            .execute(conn)
            .await
            .expect("bench database created");
    }
    let data = tempfile::tempdir().expect("temp dir");
    let plugins = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        common::repo_plugins().join("data_analyzer.rhai"),
        plugins.path().join("data_analyzer.rhai"),
    )
    .expect("script copied");
    let script = sales_script(1000);
    let mut backends = vec![("SQLite", String::new())];
    if admin_conn.is_some() {
        backends.push(("PostgreSQL", pg_url.clone()));
    }
    let query = wire::encode(&Value::from(
        "SELECT * FROM sales WHERE date > '2024-01-01'",
    ));
    let mut lines = Vec::new();
    for (label, url) in backends {
        let config = DatabaseConfig {
            url: url.clone(),
            allow_writes: true,
            ..DatabaseConfig::default()
        };
        Database::open(&config, data.path())
            .expect("database")
            .run_script(script.clone())
            .await
            .expect("sales loaded");
        let file = data.path().join(format!("{label}.toml"));
        std::fs::write(
            &file,
            // The script's deadline raised: at 256 in flight on two cores a request waits
            // longer for a sandbox thread than half the default 1 s, which would make it a 503
            // (queue_wait_ms); this section measures the script and the database, not that.
            format!(
                "data_dir = {:?}\n[rhai]\ntimeout_ms = 30000\n[database]\nurl = {url:?}\n",
                data.path()
            ),
        )
        .expect("config");
        let worker = WorkerProcess::spawn(server, plugins.path(), Some(&file));
        common::wait_for_plugin(client, "database", Value::from("SELECT 1")).await;
        for (plugin, body) in [("data_analyzer", Bytes::new()), ("database", query.clone())] {
            let target = Target {
                label: Box::leak(format!("{plugin} on {label}").into_boxed_str()),
                subject: format!("mofa.exec.{plugin}"),
                body,
                pid: worker.child.id(),
            };
            lines.push((target.label, measure(client, &target, requests).await));
        }
        drop(worker);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(mut conn) = admin_conn {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
    println!();
    println!("analyze_sales over the bus: 1,000 rows in sales, ~500 read and summed per request ({requests} requests per throughput run):");
    println!(
        "  {:<32} {:>9} {:>9} | {:>10} {:>10} {:>10} | {:>10}",
        "target", "p50", "p99", "1 in flight", "64", "256", "CPU/req"
    );
    for (label, f) in &lines {
        println!(
            "  {:<32} {:>9.1?} {:>9.1?} | {:>8.0}/s {:>8.0}/s {:>8.0}/s | {:>10.1?}",
            label,
            f.p50,
            f.p99,
            f.throughput[0].1,
            f.throughput[1].1,
            f.throughput[2].1,
            f.cpu_per_request
        );
    }
}

/// Bursts of 1k, 10k and 50k requests sent at once to the Rhai `discount` plugin, on a worker
/// that refuses what it cannot start at once (`max_queue = 0`, the behaviour before the queue)
/// and on one with the default queue: ok replies per second of the burst and p99 of the ok
/// replies' latency.
async fn bursts(server: &NatsServer, client: &Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        common::repo_plugins().join("discount.rhai"),
        dir.path().join("discount.rhai"),
    )
    .expect("script copied");
    let no_queue = dir.path().join("no-queue.toml");
    std::fs::write(&no_queue, "max_queue = 0\n").expect("config");
    let body = wire::encode(&Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]));
    println!();
    println!("bursts to the Rhai discount plugin, all requests sent at once (goodput: ok replies per second until the last reply):");
    println!(
        "  {:<26} {:>7} {:>8} {:>8} {:>8} {:>12} {:>10}",
        "worker", "burst", "ok", "503", "none", "goodput", "p99 ok"
    );
    for (label, config) in [
        ("no queue (max_queue = 0)", Some(no_queue.as_path())),
        ("queue (defaults)", None),
    ] {
        let worker = WorkerProcess::spawn(server, dir.path(), config);
        common::wait_for_plugin(client, "discount", wire::decode(&body).expect("body")).await;
        for n in [1_000usize, 10_000, 50_000] {
            let started = Instant::now();
            let replies = futures::future::join_all((0..n).map(|_| {
                let body = body.clone();
                async move {
                    let sent = Instant::now();
                    let reply = client
                        .send_request(
                            "mofa.exec.discount",
                            async_nats::Request::new()
                                .payload(body)
                                .timeout(Some(Duration::from_secs(30))),
                        )
                        .await;
                    (reply, sent.elapsed())
                }
            }))
            .await;
            let elapsed = started.elapsed();
            let (mut ok, mut refused, mut none) = (Vec::new(), 0, 0);
            for (reply, took) in replies {
                match reply {
                    Ok(m)
                        if m.headers
                            .as_ref()
                            .is_none_or(|h| h.get(wire::HEADER_ERROR_CODE).is_none()) =>
                    {
                        ok.push(took)
                    }
                    Ok(_) => refused += 1,
                    Err(_) => none += 1,
                }
            }
            ok.sort();
            let p99 = ok
                .get(ok.len().saturating_sub(1) * 99 / 100)
                .copied()
                .unwrap_or_default();
            println!(
                "  {:<26} {:>7} {:>8} {:>8} {:>8} {:>10.0}/s {:>10.1?}",
                label,
                n,
                ok.len(),
                refused,
                none,
                ok.len() as f64 / elapsed.as_secs_f64(),
                p99
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(worker);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Durable jobs against request/reply on the same worker and plugin (the Rhai `discount`):
/// end-to-end latency one at a time (submit → result on `mofa.results.<id>`, against request →
/// reply) and throughput with many in flight (all jobs submitted at once, until the last result,
/// against 256 requests in flight).
async fn jobs_vs_requests(server: &NatsServer, client: &Client, n: usize) {
    use mofa_bus::jobs::{JobResult, Jobs, JobsConfig};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        common::repo_plugins().join("discount.rhai"),
        dir.path().join("discount.rhai"),
    )
    .expect("script copied");
    let input = Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]);
    let body = wire::encode(&input);
    let worker = WorkerProcess::spawn(server, dir.path(), None);
    common::wait_for_plugin(client, "discount", input.clone()).await;
    let jobs = Jobs::open(client.clone(), &JobsConfig::default())
        .await
        .expect("jobs stream");
    let percentile = |mut v: Vec<Duration>, p: usize| {
        v.sort();
        v.get(v.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    let sequential = (n / 10).max(200);

    // One at a time.
    let mut request_times = Vec::with_capacity(sequential);
    for _ in 0..sequential {
        let sent = Instant::now();
        request(client, "mofa.exec.discount", body.clone()).await;
        request_times.push(sent.elapsed());
    }
    let mut job_times = Vec::with_capacity(sequential);
    for _ in 0..sequential {
        let id = nuid::next().as_str().to_string();
        let mut result = client
            .subscribe(mofa_bus::subjects::results(&id))
            .await
            .expect("subscribes");
        let sent = Instant::now();
        jobs.submit("discount", &input, Some(&id))
            .await
            .expect("submitted");
        result.next().await.expect("a result");
        job_times.push(sent.elapsed());
    }

    // Many in flight.
    let started = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let requests = futures::future::join_all((0..n).map(|_| {
        let (client, body, in_flight) = (client.clone(), body.clone(), in_flight.clone());
        async move {
            let _slot = in_flight.acquire().await.expect("open");
            request(&client, "mofa.exec.discount", body).await;
        }
    }));
    requests.await;
    let request_rate = n as f64 / started.elapsed().as_secs_f64();

    let mut results = client
        .subscribe("mofa.results.>")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    let started = Instant::now();
    let submits = futures::future::join_all((0..n).map(|_| {
        let (jobs, input) = (jobs.clone(), input.clone());
        async move {
            jobs.submit("discount", &input, None)
                .await
                .expect("submitted")
        }
    }));
    let submitted = submits.await;
    let stored = started.elapsed();
    let mut finished = 0;
    while finished < submitted.len() {
        match tokio::time::timeout(Duration::from_secs(60), results.next()).await {
            Ok(Some(m)) => {
                if JobResult::decode(&m.payload).is_ok_and(|r| r.ok) {
                    finished += 1;
                }
            }
            _ => break,
        }
    }
    let job_rate = finished as f64 / started.elapsed().as_secs_f64();
    println!();
    println!("durable jobs vs request/reply, Rhai discount on one worker ({sequential} one at a time, {n} in flight):");
    println!(
        "  {:<30} {:>10} {:>10} {:>14}",
        "path", "p50", "p99", "throughput"
    );
    println!(
        "  {:<30} {:>10.1?} {:>10.1?} {:>12.0}/s",
        "request/reply (256 in flight)",
        percentile(request_times.clone(), 50),
        percentile(request_times, 99),
        request_rate
    );
    println!(
        "  {:<30} {:>10.1?} {:>10.1?} {:>12.0}/s  ({finished} of {n} results; all {} stored in {:.1?})",
        "durable jobs (all submitted)",
        percentile(job_times.clone(), 50),
        percentile(job_times, 99),
        job_rate,
        submitted.len(),
        stored
    );
    drop(worker);
}

/// Cold start and footprint: time from starting `mofa worker` to its Services API answering
/// (it answers once every plugin serves), with an empty data directory (every WASM module
/// compiled) and again with the one the first run left (compiled modules loaded from the disk
/// cache); then its resident memory and CPU use after a few idle seconds. For the shipped
/// plugins, and for 50 Rhai scripts and 10 distinct WASM modules.
async fn cold_start(server: &NatsServer, client: &Client) {
    let many = tempfile::tempdir().expect("temp dir");
    let script = std::fs::read_to_string(common::repo_plugins().join("discount.rhai"))
        .expect("discount.rhai");
    for i in 0..50 {
        std::fs::write(many.path().join(format!("rule_{i}.rhai")), &script).expect("script");
    }
    let module = std::fs::read(common::repo_plugins().join("discount_wasm.wasm"))
        .expect("discount_wasm.wasm");
    for i in 0..10u8 {
        // A custom section makes each module's bytes (and so its compiled image) its own.
        let mut bytes = module.clone();
        bytes.extend_from_slice(&[0, 2, 1, b'a' + i]);
        std::fs::write(many.path().join(format!("module_{i}.wasm")), bytes).expect("module");
    }
    let empty = tempfile::tempdir().expect("temp dir");
    println!();
    println!("cold start and footprint (start → Services API answering; idle figures after 2 s):");
    println!(
        "  {:<34} {:<22} {:>10} {:>10} {:>14}",
        "plugins", "data directory", "ready", "idle RSS", "idle CPU"
    );
    let sets = [
        ("none (plugins dir empty)", empty.path().to_path_buf()),
        ("shipped (plugins/)", common::repo_plugins()),
        ("50 Rhai + 10 WASM", many.path().to_path_buf()),
    ];
    for (label, plugins) in sets {
        let data = tempfile::tempdir().expect("temp dir");
        for cache in ["empty (compiles)", "warm (disk cache)"] {
            let name = format!("coldstart{}", nuid::next().as_str());
            let started = Instant::now();
            let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
                .args([
                    "worker",
                    "--nats",
                    &server.url(),
                    "--name",
                    &name,
                    "--plugins",
                ])
                .arg(&plugins)
                .env("MOFA_DATA_DIR", data.path())
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("worker starts");
            let ping = format!("$SRV.PING.mofa.{name}");
            let ready = loop {
                let answer = tokio::time::timeout(
                    Duration::from_millis(100),
                    client.request(ping.clone(), Bytes::new()),
                )
                .await;
                if matches!(answer, Ok(Ok(_))) {
                    break started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{label}: not ready in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", worker.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(0);
            let cpu_before = shared::cpu_ns(worker.id());
            let idle = Duration::from_secs(5);
            tokio::time::sleep(idle).await;
            let idle_cpu =
                (shared::cpu_ns(worker.id()) - cpu_before) as f64 / idle.as_nanos() as f64;
            println!(
                "  {:<34} {:<22} {:>10.1?} {:>7.1} MB {:>12.3}% of a core",
                label,
                cache,
                ready,
                rss_kb as f64 / 1024.0,
                idle_cpu * 100.0
            );
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// Whether `program` runs (`program --version` succeeds): the sections that need a tool say so
/// and skip when it is missing.
fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `-- profile [PLUGIN…]`: where a worker's CPU goes per request. For each plugin (default: the
/// native, Rhai and WASM discount rule), loads one worker with requests at 64 in flight while
/// `perf record` samples it, then splits the worker's CPU per request by where the samples
/// fell: the kernel (socket I/O, futex wake-ups, scheduling), the NATS client, the tokio
/// runtime, the sandbox pool's hand-off, the script or module, MessagePack, the allocator.
async fn profile(server: &NatsServer, client: &Client, plugins: &[String], requests: usize) {
    if !installed("perf") {
        println!("profile: needs perf (Debian package linux-perf)");
        return;
    }
    let worker = WorkerProcess::spawn(server, &common::repo_plugins(), None);
    let body = wire::encode(&Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]));
    common::wait_for_plugin(client, "discount", wire::decode(&body).expect("body")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    println!();
    println!("profile: worker CPU per request by where perf's samples fell ({requests} requests at 64 in flight):");
    for plugin in plugins {
        let target = Target {
            label: "profiled",
            subject: format!("mofa.exec.{plugin}"),
            body: body.clone(),
            pid: worker.child.id(),
        };
        for _ in 0..2000 {
            request(client, &target.subject, body.clone()).await;
        }
        let data = dir.path().join(format!("{plugin}.data"));
        let mut perf = std::process::Command::new("perf")
            .args(["record", "-q", "-F", "2999", "-o"])
            .arg(&data)
            .args(["-p", &worker.child.id().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf starts");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu_before = shared::cpu_ns(target.pid);
        let switches_before = shared::context_switches(target.pid);
        load(client, &target, 64, requests).await;
        let cpu = (shared::cpu_ns(target.pid) - cpu_before) as f64 / requests as f64 / 1000.0;
        let switches =
            (shared::context_switches(target.pid) - switches_before) as f64 / requests as f64;
        // SIGINT: perf writes its data and exits.
        // SAFETY: signalling a child process we started.
        unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
        let _ = perf.wait();
        let report = std::process::Command::new("perf")
            .args([
                "report",
                "-q",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "-i",
            ])
            .arg(&data)
            .output()
            .expect("perf report");
        let buckets = profile_buckets(&String::from_utf8_lossy(&report.stdout));
        println!("  {plugin}: {cpu:.1} µs CPU and {switches:.2} context switches per request");
        for (bucket, share) in buckets {
            println!(
                "    {bucket:<44} {:>5.1}%  {:>5.2} µs",
                share * 100.0,
                share * cpu
            );
        }
        println!("    top symbols:");
        for line in String::from_utf8_lossy(&report.stdout)
            .lines()
            .filter(|l| l.contains('%'))
            .take(12)
        {
            let line: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("      {}", line.chars().take(110).collect::<String>());
        }
    }
    drop(worker);
}

/// `-- instructions [PLUGIN…]` (not part of the full run): instructions executed per request,
/// counted by callgrind (valgrind). Unlike CPU time they do not move with a busy or noisy
/// machine, so they show what a change saves and where the floor is. The bare echo, the Python
/// worker and workers serving the plugins each run under callgrind: the worker as configured by
/// default (but with sandboxed calls on the sandbox pool, never inline: see below), then (native and Rhai discount) exporting traces for 10% of requests and for all,
/// and exporting metrics only, to a local OTLP sink. For each target the count is zeroed after
/// a warm-up, `requests` requests are sent at 16 in flight, and the count is dumped and split
/// by function. Only user-space instructions count: what the kernel does for a syscall does
/// not, so these figures stand beside the CPU figures, not in place of them.
async fn instructions(server: &NatsServer, client: &Client, plugins: &[String], requests: usize) {
    if !installed("valgrind") {
        println!("instructions: needs valgrind (Debian package valgrind)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let body = wire::encode(&Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rows: Vec<Counted> = Vec::new();

    let bare = Callgrind::start(
        dir.path(),
        "bare",
        &std::env::current_exe().expect("own path"),
        &[],
        &[
            (shared::ROLE_ENV, shared::BARE_ROLE),
            (shared::URL_ENV, &server.url()),
        ],
        true,
    );
    rows.push(
        bare.count(
            client,
            "bare async-nats echo",
            shared::BARE_SUBJECT,
            &body,
            requests,
        )
        .await,
    );
    drop(bare);
    let python_script = root.join("benches/python_worker.py");
    let python = Callgrind::start(
        dir.path(),
        "python",
        &shared::python(),
        &[
            python_script.to_str().expect("UTF-8 path"),
            &server.url(),
            PYTHON_SUBJECT,
        ],
        &[],
        true,
    );
    rows.push(
        python
            .count(client, PYTHON_LABEL, PYTHON_SUBJECT, &body, requests)
            .await,
    );
    drop(python);

    // Valgrind cannot reserve the address space of the default WASM instance pool (16 slots
    // per sandbox thread, 8 GiB each): 4 slots fit. Sandboxed calls run on the sandbox pool:
    // whether they keep starting inline depends, past the gate's 1 ms bound, on their time,
    // which valgrind stretches ~50-fold, so left to the gate they would take either path from
    // run to run.
    let config = dir.path().join("callgrind.toml");
    std::fs::write(
        &config,
        "[wasm]\nmax_instances = 4\ninline = false\n[rhai]\ninline = false\n",
    )
    .expect("config");
    let (port, _posts, _bytes) = otlp_sink().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let traced = |ratio: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_METRICS_EXPORTER", "none".to_string()),
            (
                "OTEL_TRACES_SAMPLER",
                "parentbased_traceidratio".to_string(),
            ),
            ("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()),
        ]
    };
    let traced_only: Vec<String> = plugins
        .iter()
        .filter(|p| ["discount_native", "discount"].contains(&p.as_str()))
        .cloned()
        .collect();
    let variants = [
        ("", vec![], plugins.to_vec()),
        (", traced 10%", traced("0.1"), traced_only.clone()),
        (", traced", traced("1"), traced_only.clone()),
        (
            ", metrics",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_TRACES_EXPORTER", "none".to_string()),
            ],
            traced_only,
        ),
    ];
    let plugins_dir = common::repo_plugins();
    for (suffix, env, plugins) in variants {
        if plugins.is_empty() {
            continue;
        }
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("RUST_LOG", "warn"));
        let worker = Callgrind::start(
            dir.path(),
            "worker",
            std::path::Path::new(env!("CARGO_BIN_EXE_mofa")),
            &[
                "worker",
                "--nats",
                &server.url(),
                "--plugins",
                plugins_dir.to_str().expect("UTF-8 path"),
                "--config",
                config.to_str().expect("UTF-8 path"),
            ],
            &env,
            false,
        );
        // The worker is ready (it answers the Services API's PING once every plugin in the
        // directory is loaded) and every plugin answers before any is counted: a worker still
        // loading the others would count its loading.
        let ping = format!("$SRV.PING.{}", mofa_bus::subjects::SERVICE_NAME);
        worker.wait_for(client, &ping, &Bytes::new()).await;
        for plugin in &plugins {
            worker
                .wait_for(client, &format!("mofa.exec.{plugin}"), &body)
                .await;
        }
        for plugin in &plugins {
            let subject = format!("mofa.exec.{plugin}");
            let label = format!("{plugin}{suffix}");
            rows.push(
                worker
                    .count(client, &label, &subject, &body, requests)
                    .await,
            );
        }
        drop(worker);
    }

    let per = |label: &str| {
        rows.iter()
            .find(|r| r.label == label)
            .map(|r| r.per_request)
    };
    let (bare, python) = (per("bare async-nats echo"), per(PYTHON_LABEL));
    println!();
    println!(
        "instructions per request, counted by callgrind ({requests} requests at 16 in flight; user space only; sandboxed calls on the sandbox pool):"
    );
    println!(
        "  {:<28} {:>12} {:>9} {:>9} {:>13}",
        "target", "instr/req", "x bare", "x python", "x untraced"
    );
    for row in &rows {
        let ratio = |base: Option<f64>| base.map_or(f64::NAN, |b| row.per_request / b);
        let untraced = row
            .label
            .split_once(", ")
            .and_then(|(plugin, _)| per(plugin));
        println!(
            "  {:<28} {:>12.0} {:>8.2}x {:>8.2}x {:>12.2}x",
            row.label,
            row.per_request,
            ratio(bare),
            ratio(python),
            ratio(untraced.or(Some(row.per_request)))
        );
    }
    // Tracing's cost grows with the sampling ratio r, about r * (a sampled request's extra
    // cost): the ratio up to which tracing costs at most 10% more than no tracing. (Taken
    // from the every-span row: the 10% row samples 10% of the requests only on average.)
    for plugin in plugins {
        let (Some(untraced), Some(all)) = (per(plugin), per(&format!("{plugin}, traced"))) else {
            continue;
        };
        let span = all - untraced;
        println!(
            "  {plugin}: a sampled request costs {span:.0} more instructions; tracing costs <= 10% (the target) up to about {:.1}% of requests sampled",
            10.0 * untraced / span
        );
    }
    for row in &rows {
        println!(
            "  {}: {:.0} instructions per request",
            row.label, row.per_request
        );
        for (bucket, share) in &row.buckets {
            println!(
                "    {bucket:<44} {:>5.1}%  {:>8.0}",
                share * 100.0,
                share * row.per_request
            );
        }
        println!("    top functions (own instructions per request):");
        for (function, count) in &row.top {
            let function: String = function.chars().take(100).collect();
            println!("      {:>8.0}  {function}", count);
        }
    }
}

/// One target's count: instructions per request, their split by bucket, the top functions.
struct Counted {
    label: String,
    per_request: f64,
    buckets: Vec<(&'static str, f64)>,
    top: Vec<(String, f64)>,
}

/// A responder running under callgrind.
struct Callgrind {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Callgrind {
    /// Starts `program` with `args` and `envs` under callgrind; waits for its `ready` line when
    /// `says_ready`, else for whoever is asked first in [`Callgrind::count`].
    fn start(
        dir: &std::path::Path,
        name: &str,
        program: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
        says_ready: bool,
    ) -> Callgrind {
        let out = dir.join(format!("{name}.{}.out", nuid::next()));
        let mut command = std::process::Command::new("valgrind");
        command
            .args([
                "--tool=callgrind",
                "-q",
                // JIT code (wasmtime's) lives in anonymous memory.
                "--smc-check=all-non-file",
                // Names in full in every dump, so one dump reads on its own.
                "--compress-strings=no",
                "--compress-pos=no",
            ])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(program)
            .args(args)
            .stdout(if says_ready {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            });
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command.spawn().expect("valgrind starts");
        let child = if says_ready {
            shared::wait_ready(child, name)
        } else {
            child
        };
        Callgrind { child, out }
    }

    /// Waits until `subject` is answered: under callgrind a worker takes a while to compile
    /// its plugins.
    async fn wait_for(&self, client: &Client, subject: &str, body: &Bytes) {
        let started = Instant::now();
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(subject.to_string(), body.clone()),
            )
            .await;
            if matches!(answer, Ok(Ok(_))) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{subject} was not answered under callgrind"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `callgrind_control` with `args` on this process.
    fn control(&self, args: &[&str]) {
        let status = std::process::Command::new("callgrind_control")
            .args(args)
            .arg(self.child.id().to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("callgrind_control runs");
        assert!(status.success(), "callgrind_control {args:?} failed");
    }

    /// Instructions per request on `subject` (warmed up, zeroed, `requests` sent, dumped), by
    /// bucket, and the top functions by their own instructions.
    async fn count(
        &self,
        client: &Client,
        label: &str,
        subject: &str,
        body: &Bytes,
        requests: usize,
    ) -> Counted {
        self.wait_for(client, subject, body).await;
        let target = Target {
            label: "counted",
            subject: subject.to_string(),
            body: body.clone(),
            pid: self.child.id(),
        };
        load(client, &target, 16, 500).await;
        self.control(&["--zero"]);
        load(client, &target, 16, requests).await;
        self.control(&["--dump"]);
        let dump = self.latest_dump().expect("callgrind wrote a dump");
        let text = std::fs::read_to_string(&dump).expect("the dump reads");
        let (total, functions) = own_instructions(&text);
        let total = total as f64;
        // As `perf report` lines, for the buckets: "12.34% function [object]".
        let lines: Vec<String> = functions
            .iter()
            .map(|(name, count)| format!("{:.4}% {name}", *count as f64 * 100.0 / total))
            .collect();
        println!("  counted {label}");
        Counted {
            label: label.to_string(),
            per_request: total / requests as f64,
            buckets: profile_buckets(&lines.join("\n")),
            top: functions
                .iter()
                .take(12)
                .map(|(name, count)| (name.clone(), *count as f64 / requests as f64))
                .collect(),
        }
    }

    /// The newest dump (`<out>.<part>`), if any.
    fn latest_dump(&self) -> Option<std::path::PathBuf> {
        let dir = self.out.parent()?;
        let name = self.out.file_name()?.to_string_lossy().to_string();
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                let part: u32 = file.strip_prefix(&format!("{name}."))?.parse().ok()?;
                Some((part, e.path()))
            })
            .max()
            .map(|(_, path)| path)
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A callgrind dump's total and each function's own instructions (`function [object]`),
/// largest first. Read here rather than with `callgrind_annotate`, which (valgrind 3.19)
/// charges a multi-threaded Rust program's whole count to `clone`. In the format, a cost line
/// after `calls=` is the call's inclusive cost and belongs to the callee; every other cost line
/// is the current function's own.
fn own_instructions(dump: &str) -> (u64, Vec<(String, u64)>) {
    let mut own: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let (mut object, mut function) = (String::new(), String::new());
    let mut after_call = false;
    let mut total = 0;
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix("ob=") {
            object = name.to_string();
        } else if let Some(name) = line.strip_prefix("fn=") {
            function = format!("{name} [{object}]");
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if let Some(sum) = line.strip_prefix("totals:") {
            total = sum.trim().parse().unwrap_or(0);
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            let cost: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *own.entry(function.clone()).or_default() += cost;
        }
    }
    let mut functions: Vec<(String, u64)> = own.into_iter().collect();
    functions.sort_by_key(|f| std::cmp::Reverse(f.1));
    (total, functions)
}

/// Sends `requests` requests to `target` with `inflight` in flight.
async fn load(client: &Client, target: &Target, inflight: usize, requests: usize) {
    let remaining = Arc::new(AtomicUsize::new(requests));
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let client = client.clone();
            let subject = target.subject.clone();
            let body = target.body.clone();
            let remaining = remaining.clone();
            tokio::spawn(async move {
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    request(&client, &subject, body.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("joins");
    }
}

/// Shares of samples per part of the worker, from `perf report --sort dso,sym` lines
/// (`  12.34%  mofa  [.] symbol`), largest first.
fn profile_buckets(report: &str) -> Vec<(&'static str, f64)> {
    const BUCKETS: [(&str, &[&str]); 10] = [
        (
            "kernel (sockets, futex wake-ups, scheduling)",
            &["[kernel", "[k]"],
        ),
        (
            "telemetry (tracing, OpenTelemetry)",
            &[
                "telemetry::",
                "opentelemetry",
                "tracing_core",
                "tracing::span",
                "Instrumented<T>",
                "tracing_subscriber",
            ],
        ),
        (
            "sandbox pool hand-off",
            &[
                "sandbox",
                "pool::",
                "crossbeam",
                "parking_lot",
                "std::sync::",
                "std::thread",
            ],
        ),
        ("Rhai engine", &["rhai::"]),
        (
            "wasmtime (instance, call)",
            &["wasmtime", "cranelift", "jit-", "wasm"],
        ),
        ("NATS client (parse, write)", &["async_nats", "nats"]),
        ("tokio runtime", &["tokio::"]),
        ("MessagePack, events", &["rmp", "rmpv", "wire::", "events"]),
        ("allocator", &["mi_", "_mi_", "malloc", "free"]),
        ("libc (memcpy, syscalls)", &["libc.so", "ld-linux"]),
    ];
    let mut shares: Vec<(&'static str, f64)> = BUCKETS.iter().map(|(b, _)| (*b, 0.0)).collect();
    let mut other = 0.0;
    for line in report.lines() {
        let line = line.trim();
        let Some((percent, rest)) = line.split_once('%') else {
            continue;
        };
        let Ok(percent) = percent.trim().parse::<f64>() else {
            continue;
        };
        match BUCKETS
            .iter()
            .position(|(_, needles)| needles.iter().any(|n| rest.contains(n)))
        {
            Some(i) => shares[i].1 += percent / 100.0,
            None => other += percent / 100.0,
        }
    }
    shares.push(("other", other));
    shares.retain(|(_, s)| *s > 0.0);
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// The plugins named after `section` on the command line (`profile discount`), or `default`;
/// `None` when `section` is not there.
fn section_plugins(args: &[String], section: &str, default: &[&str]) -> Option<Vec<String>> {
    let i = args.iter().position(|a| a == section)?;
    let named: Vec<String> = args[i + 1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    Some(if named.is_empty() {
        default.iter().map(|p| p.to_string()).collect()
    } else {
        named
    })
}

fn main() {
    if std::env::var(shared::ROLE_ENV).as_deref() == Ok(shared::BARE_ROLE) {
        let url = std::env::var(shared::URL_ENV).expect("MOFA_BENCH_URL");
        shared::run_bare_echo(&url);
        return;
    }
    // `cargo bench` passes --bench; `in-process` runs only the in-process figures.
    if std::env::args().any(|a| a == "in-process") {
        in_process();
        return;
    }
    let requests: usize = std::env::var("MOFA_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);

    // `analyze-sales`, `bursts` and `jobs` run only that section.
    let only_sales = std::env::args().any(|a| a == "analyze-sales");
    let only_bursts = std::env::args().any(|a| a == "bursts");
    let only_jobs = std::env::args().any(|a| a == "jobs");
    let only_start = std::env::args().any(|a| a == "cold-start");
    let only_tracing = std::env::args().any(|a| a == "tracing");
    let args: Vec<String> = std::env::args().collect();
    let profiled = section_plugins(
        &args,
        "profile",
        &["discount_native", "discount", "discount_wasm"],
    );
    let counted = section_plugins(
        &args,
        "instructions",
        &["echo", "discount_native", "discount", "discount_wasm"],
    );
    if only_sales
        || only_bursts
        || only_jobs
        || only_start
        || only_tracing
        || profiled.is_some()
        || counted.is_some()
    {
        let server = NatsServer::start();
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                let client = async_nats::connect(server.url()).await.expect("connects");
                if only_sales {
                    analyze_sales(&server, &client, (requests / 10).max(200)).await;
                }
                if only_bursts {
                    bursts(&server, &client).await;
                }
                if only_jobs {
                    jobs_vs_requests(&server, &client, requests / 2).await;
                }
                if only_start {
                    cold_start(&server, &client).await;
                }
                if only_tracing {
                    tracing_cost(&server, &client, requests).await;
                }
                if let Some(plugins) = &profiled {
                    profile(&server, &client, plugins, requests).await;
                }
                if let Some(plugins) = &counted {
                    instructions(&server, &client, plugins, (requests / 10).max(500)).await;
                }
            });
        return;
    }

    // `over-the-bus` runs only the table of round trips, throughput and CPU per request.
    let only_bus = std::env::args().any(|a| a == "over-the-bus");
    if !only_bus {
        in_process();
    }

    let server = NatsServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut bare = shared::spawn_role(shared::BARE_ROLE, &server.url(), &[]);
        let client = async_nats::connect(server.url()).await.expect("connects");
        let discount = wire::encode(&Value::Map(vec![
            (Value::from("price"), Value::from(100)),
            (Value::from("customer_tier"), Value::from("gold")),
        ]));
        let bare_target = Target {
            label: "bare async-nats echo",
            subject: shared::BARE_SUBJECT.into(),
            body: discount.clone(),
            pid: bare.id(),
        };
        let mut targets = Vec::new();
        let mut results = vec![measure(&client, &bare_target, requests).await];
        targets.push(bare_target);
        // What the sandboxed plugins replace: the same discount rule in a plain nats-py worker.
        let mut python = python_worker(&server.url());
        let python_target = Target {
            label: PYTHON_LABEL,
            subject: PYTHON_SUBJECT.into(),
            body: discount.clone(),
            pid: python.id(),
        };
        results.push(measure(&client, &python_target, requests).await);
        targets.push(python_target);
        let _ = python.kill();
        let _ = python.wait();
        // The worker as configured by default (result events on), then with result events off.
        let quiet = tempfile::tempdir().expect("temp dir");
        let quiet_config = quiet.path().join("quiet.toml");
        std::fs::write(&quiet_config, "[events]\nresults = false\n").expect("config");
        // Every sandboxed call handed to a sandbox thread, as before calls started inline.
        let pooled_config = quiet.path().join("pooled.toml");
        std::fs::write(&pooled_config, "[rhai]\ninline = false\n[wasm]\ninline = false\n")
            .expect("config");
        // The async side on one thread (no wake-ups between threads), events on.
        let one_thread_config = quiet.path().join("one_thread.toml");
        std::fs::write(&one_thread_config, "async_threads = 1\n").expect("config");
        for (config, suffix, plugins) in [
            (None, "", &["echo", "discount_native", "discount", "discount_wasm"][..]),
            (Some(quiet_config.as_path()), ", no events", &["echo", "discount_native"][..]),
            (Some(pooled_config.as_path()), ", no inline", &["discount", "discount_wasm"][..]),
            (
                Some(one_thread_config.as_path()),
                ", 1 async thread",
                &["discount_native", "discount", "discount_wasm"][..],
            ),
        ] {
            let worker = WorkerProcess::spawn(&server, &common::repo_plugins(), config);
            common::wait_for_plugin(&client, "discount", Value::Map(vec![
                (Value::from("price"), Value::from(1)),
                (Value::from("customer_tier"), Value::from("gold")),
            ]))
            .await;
            for plugin in plugins {
                let target = Target {
                    label: Box::leak(format!("{plugin}{suffix}").into_boxed_str()),
                    subject: format!("mofa.exec.{plugin}"),
                    body: discount.clone(),
                    pid: worker.child.id(),
                };
                results.push(measure(&client, &target, requests).await);
                targets.push(target);
            }
            drop(worker);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let base = &results[0];
        println!();
        println!("over the bus ({requests} requests per throughput run; ratios against the bare echo):");
        println!(
            "  {:<30} {:>9} {:>9} {:>7} | {:>16} {:>16} {:>16} | {:>12} | {:>9} | {:>7}",
            "target", "p50", "p99", "p50 x", "1 in flight", "64 in flight", "256 in flight", "CPU/req",
            "ctx sw/req", "sandbox"
        );
        for (target, f) in targets.iter().zip(&results) {
            let tp: Vec<String> = f
                .throughput
                .iter()
                .zip(&base.throughput)
                .map(|((_, r), (_, b))| format!("{:>8.0}/s {:>4.2}x", r, r / b))
                .collect();
            println!(
                "  {:<30} {:>9.1?} {:>9.1?} {:>6.2}x | {:>16} {:>16} {:>16} | {:>7.1?} {:>4.2}x | {:>9.2} | {:>6.0}%",
                target.label,
                f.p50,
                f.p99,
                f.p50.as_secs_f64() / base.p50.as_secs_f64(),
                tp[0],
                tp[1],
                tp[2],
                f.cpu_per_request,
                f.cpu_per_request.as_secs_f64() / base.cpu_per_request.as_secs_f64().max(1e-12),
                f.switches_per_request,
                f.sandbox_share * 100.0,
            );
        }
        println!();
        let cpu_of = |label: &str| {
            targets
                .iter()
                .zip(&results)
                .find(|(t, _)| t.label == label)
                .map(|(_, f)| f.cpu_per_request.as_secs_f64())
        };
        if let Some(py) = cpu_of(PYTHON_LABEL).filter(|py| *py > 0.0) {
            for (plugin, target) in [
                ("discount", 0.5),
                ("discount_wasm", 0.8),
                ("discount, 1 async thread", 0.5),
                ("discount_wasm, 1 async thread", 0.8),
            ] {
                if let Some(cpu) = cpu_of(plugin) {
                    println!(
                        "  CPU/request {plugin:<30} / python worker: {:.2}x (target <= {target}x)",
                        cpu / py
                    );
                }
            }
        }
        println!("targets: native p50 <= 1.10x bare; throughput at 256 in flight >= 0.85x bare (discount_wasm >= 0.70x); CPU/request <= 1.5x bare");
        let _ = bare.kill();
        let _ = bare.wait();

        if only_bus {
            return;
        }
        reload_latency(&server, &client).await;
        analyze_sales(&server, &client, (requests / 10).max(200)).await;
        bursts(&server, &client).await;
        jobs_vs_requests(&server, &client, requests / 2).await;
        cold_start(&server, &client).await;
        tracing_cost(&server, &client, requests).await;
    });
}

/// A stand-in OTLP/HTTP collector: answers every POST with an empty 200 (what a collector
/// answers to a full success) and counts the requests and bytes it got. Hand-written rather
/// than a real collector so that the cost measured is the worker's alone; the telemetry tests
/// decode what the worker sends with the official protobuf definitions.
async fn otlp_sink() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("sink listens");
    let port = listener.local_addr().expect("address").port();
    let (posts, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (p, b) = (posts.clone(), bytes.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (p, b) = (p.clone(), b.clone());
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match socket.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    p.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(length, Ordering::Relaxed);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, posts, bytes)
}

/// Throughput and CPU per request with tracing off (no endpoint: no span is made), on (every
/// request's span exported to [`otlp_sink`]) and on with 10% of traces sampled, for a native
/// and a Rhai plugin.
async fn tracing_cost(server: &NatsServer, client: &Client, requests: usize) {
    let (port, posts, bytes) = otlp_sink().await;
    let discount = wire::encode(&Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]));
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut rows = Vec::new();
    for (mode, env) in [
        ("off", vec![]),
        (
            "on",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                // Room for every span of a throughput run between two exports, so the figures
                // include exporting all of them rather than dropping most.
                ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        ),
        (
            "10% sampled",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        ),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"));
        command
            .args(["worker", "--nats", &server.url(), "--plugins"])
            .arg(common::repo_plugins())
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null());
        for (k, v) in &env {
            command.env(k, v);
        }
        let worker = WorkerProcess {
            child: command.spawn().expect("worker starts"),
        };
        common::wait_for_plugin(client, "discount", wire::decode(&discount).expect("value")).await;
        for plugin in ["discount_native", "discount"] {
            let target = Target {
                label: Box::leak(format!("{plugin}, tracing {mode}").into_boxed_str()),
                subject: format!("mofa.exec.{plugin}"),
                body: discount.clone(),
                pid: worker.child.id(),
            };
            let figures = measure(client, &target, requests).await;
            rows.push((plugin, mode, figures));
        }
        drop(worker);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!();
    println!("tracing cost ({requests} requests per throughput run; export to a local OTLP sink):");
    println!(
        "  {:<16} {:>12} | {:>14} {:>10} | {:>12} {:>8}",
        "plugin", "tracing", "256 in flight", "x off", "CPU/req", "x off"
    );
    for (plugin, mode, f) in &rows {
        let off = rows
            .iter()
            .find(|(p, m, _)| p == plugin && *m == "off")
            .map(|(_, _, f)| f)
            .expect("the off row");
        let tp = |f: &Figures| f.throughput.last().map_or(0.0, |(_, r)| *r);
        println!(
            "  {:<16} {:>12} | {:>12.0}/s {:>9.2}x | {:>12.1?} {:>7.2}x",
            plugin,
            mode,
            tp(f),
            tp(f) / tp(off).max(1e-9),
            f.cpu_per_request,
            f.cpu_per_request.as_secs_f64() / off.cpu_per_request.as_secs_f64().max(1e-12),
        );
    }
    println!(
        "  the sink got {} exports, {} KiB; target: <= 1.10x CPU/request with export on",
        posts.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) / 1024
    );
}
