//! The performance comparison (a benchmark, not a test): the three operations the
//! plugin-system docs give figures for, each written four ways (a native plugin, a Rhai
//! script, a WASM module, and pure Python), measured in one run on one machine:
//!
//! - **in-process**, per call: the Rust function, the Rhai engine call (value conversion
//!   included), a fresh WASM instance per call (input encoded, output decoded, every limit on),
//!   and the Python function timed inside CPython;
//! - **over the bus**, per request: round-trip p50 and the responding process's CPU per
//!   request at 64 in flight, for the three plugins served by one worker and for a plain
//!   nats-py worker, against the bare async-nats echo with the same body;
//! - **scaling**: throughput and p99 against requests in flight (1 … 1024) for the native,
//!   Rhai and WASM discount rule on 1, 2 and 3 `mofa worker` processes, against the bare echo.
//!
//! The operations (contract in `compare/ops.py`): JSON parsing of a 1.2 KB order document,
//! one e-mail regex over a 200-byte message, and the content-moderation rule set
//! (`plugins/rules/content_moderation.rhai`) on a message no rule matches (all four evaluated).
//! Every implementation's output is checked against the native one's before it is timed.
//!
//! `cargo bench --bench compare` runs all three sections and writes `docs/performance.md`,
//! `docs/compare.svg` and `docs/scaling.svg`. `-- in-process`, `-- over-the-bus` or
//! `-- scaling` runs and prints one section and writes nothing. `MOFA_BENCH_REQUESTS` scales
//! the request counts (default 10000 per throughput run).

#[path = "compare/chart.rs"]
mod chart;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "compare/native.rs"]
mod native;
mod shared;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use mofa_bus::plugin::AgentPlugin;
use mofa_bus::rhai::{RhaiConfig, ScriptEngine};
use mofa_bus::wire::{self, Value};
use native::Op;

/// The role of the worker serving the comparison's native, Rhai and WASM plugins.
const WORKER_ROLE: &str = "compare-worker";
const PLUGINS_ENV: &str = "MOFA_BENCH_PLUGINS";

/// The implementations, in table and chart order.
const IMPLS: [&str; 4] = ["native", "Rhai", "WASM", "Python"];

/// The subjects the nats-py worker serves: `bench.python.<op>`.
const PYTHON_PREFIX: &str = "bench.python";

/// The requests in flight of the scaling curve.
const INFLIGHT: [usize; 6] = [1, 4, 16, 64, 256, 1024];

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare")
}

impl Op {
    /// The docs' table heading for the operation.
    fn title(self) -> &'static str {
        match self {
            Op::Json => "JSON parsing (1.2 KB)",
            Op::Regex => "regex match (200 B)",
            Op::Rules => "rule evaluation (4 rules)",
        }
    }

    /// The plugin-system docs' claims, µs per operation: compiled, runtime (Rhai and WASM),
    /// Python.
    fn claim(self) -> [f64; 3] {
        match self {
            Op::Json => [10.0, 50.0, 500.0],
            Op::Regex => [1.0, 5.0, 20.0],
            Op::Rules => [0.1, 5.0, 10.0],
        }
    }

    /// The input every implementation is timed on.
    fn input(self) -> Value {
        text(&match self {
            Op::Json => std::fs::read_to_string(here().join("order.json")).expect("order.json"),
            Op::Regex => "Thanks for the quick turnaround on the quarterly figures. If anything \
                          in the attached summary looks off, reply here or write to the desk at \
                          billing.team@example.com before Friday."
                .to_string(),
            Op::Rules => "Hi team, the quarterly report is attached. See you at the review on \
                          Thursday at noon; bring your questions."
                .to_string(),
        })
    }

    /// Inputs every implementation must answer exactly as the native one does.
    fn checks(self) -> Vec<Value> {
        let mut inputs = vec![self.input()];
        match self {
            Op::Json => {}
            Op::Regex => inputs.push(text("no address in this one, just an @ sign")),
            Op::Rules => {
                for t in [
                    "well damn, that went badly",
                    "WINNER! click here: https://example.com/prize",
                    "PLEASE REPLY TODAY",
                    &"long ".repeat(420),
                ] {
                    inputs.push(text(t));
                }
            }
        }
        inputs
    }
}

fn text(t: &str) -> Value {
    Value::Map(vec![(Value::from("text"), Value::from(t))])
}

/// Whether two outputs are the same value (numbers compared as numbers, maps by key).
fn same(a: &Value, b: &Value) -> bool {
    fn json(v: &Value) -> serde_json::Value {
        normalise(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
    }
    fn normalise(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
            serde_json::Value::Array(a) => a.into_iter().map(normalise).collect(),
            serde_json::Value::Object(o) => o.into_iter().map(|(k, v)| (k, normalise(v))).collect(),
            other => other,
        }
    }
    json(a) == json(b)
}

/// A plugins directory with the comparison's Rhai scripts and WASM modules: `<op>_rhai.rhai`,
/// `<op>_wasm.wasm` with its manifest.
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = common::repo_plugins().join("rules/content_moderation.rhai");
    for (op, source) in [
        (Op::Json, here().join("json_parse.rhai")),
        (Op::Regex, here().join("regex_match.rhai")),
        (Op::Rules, rules),
    ] {
        std::fs::copy(&source, dir.path().join(format!("{}_rhai.rhai", op.name())))
            .expect("script copied");
        std::fs::copy(
            here().join("compare_ops.wasm"),
            dir.path().join(format!("{}_wasm.wasm", op.name())),
        )
        .expect("module copied");
        std::fs::write(
            dir.path().join(format!("{}_wasm.toml", op.name())),
            manifest(op),
        )
        .expect("manifest written");
    }
    dir
}

/// The manifest of `compare_ops.wasm` serving `op`.
fn manifest(op: Op) -> String {
    let words: Vec<String> = RhaiConfig::default()
        .profanity
        .iter()
        .map(|w| format!("{w:?}"))
        .collect();
    format!(
        "description = \"the {} operation of the performance comparison\"\n\
         capabilities = [\"get_config\", \"matches\"]\n[config]\nop = \"{}\"\nprofanity = [{}]\n",
        op.name(),
        op.name(),
        words.join(", ")
    )
}

/// Nanoseconds per call of `f`, over at least `budget`.
fn per_call(mut f: impl FnMut(), budget: Duration) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        calls += 1000;
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// In-process figures: `ns[op][impl]`.
struct InProcess {
    ns: Vec<Vec<f64>>,
}

fn in_process(python: &Path) -> InProcess {
    let budget = Duration::from_millis(700);
    let engine = ScriptEngine::new(RhaiConfig::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wasm = mofa_bus::wasm::WasmRuntime::new(
        mofa_bus::wasm::WasmConfig::default(),
        mofa_bus::plugin::SandboxPool::new(0),
    )
    .expect("wasm runtime");
    let module = std::fs::read(here().join("compare_ops.wasm")).expect("compare_ops.wasm");
    let scripts = plugins_dir();

    // Python first, in its own process: the function timed inside CPython on the same inputs.
    let inputs: serde_json::Map<String, serde_json::Value> = Op::ALL
        .iter()
        .map(|op| {
            (
                op.name().to_string(),
                serde_json::to_value(op.input()).expect("input as JSON"),
            )
        })
        .collect();
    let words = serde_json::to_string(&RhaiConfig::default().profanity).expect("words");
    let out = Command::new(python)
        .arg(here().join("ops.py"))
        .args(["inprocess", &words])
        .arg(serde_json::Value::Object(inputs).to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("python runs");
    assert!(out.status.success(), "ops.py inprocess failed");
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ops.py output");

    let mut ns = Vec::new();
    for op in Op::ALL {
        let input = op.input();
        let source =
            std::fs::read_to_string(scripts.path().join(format!("{}_rhai.rhai", op.name())))
                .expect("script");
        let entry = engine.compile(op.name(), &source).expect("script compiles");
        let manifest = mofa_bus::wasm::Manifest::from_toml(&manifest(op)).expect("manifest");
        let plugin = mofa_bus::wasm::WasmPlugin::new(
            &format!("{}_wasm", op.name()),
            module.clone(),
            manifest,
            wasm.clone(),
        );
        runtime.block_on(plugin.load()).expect("module loads");

        for check in op.checks() {
            let want = op.apply(&check).expect("native answers");
            let rhai = engine.call(&entry, check.clone()).expect("script answers");
            let module = plugin.invoke_blocking(&check).expect("module answers");
            assert!(
                same(&want, &rhai),
                "{}: Rhai {rhai} != native {want}",
                op.name()
            );
            assert!(
                same(&want, &module),
                "{}: WASM {module} != native {want}",
                op.name()
            );
        }
        let py_out: Value =
            serde_json::from_value(py[op.name()]["output"].clone()).expect("python output");
        let want = op.apply(&input).expect("native answers");
        assert!(
            same(&want, &py_out),
            "{}: Python {py_out} != native {want}",
            op.name()
        );

        let native = per_call(
            || {
                std::hint::black_box(op.apply(std::hint::black_box(&input)).ok());
            },
            budget,
        );
        let rhai = per_call(
            || {
                std::hint::black_box(engine.call(&entry, input.clone()).ok());
            },
            budget,
        );
        let module = per_call(
            || {
                std::hint::black_box(plugin.invoke_blocking(&input).ok());
            },
            budget,
        );
        let python = py[op.name()]["ns"].as_f64().expect("python ns");
        ns.push(vec![native, rhai, module, python]);
    }
    let figures = InProcess { ns };
    println!("{}", in_process_table(&figures));
    println!("{}", verdicts(&figures));
    figures
}

fn in_process_table(f: &InProcess) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| operation | native | Rhai | WASM | CPython | docs' claim (compiled / runtime / Python) | measured / claim (native, Rhai, WASM, Python) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for (op, ns) in Op::ALL.iter().zip(&f.ns) {
        let [compiled, runtime, python] = op.claim();
        let claims = [compiled, runtime, runtime, python];
        let ratios: Vec<String> = ns
            .iter()
            .zip(claims)
            .map(|(n, c)| format!("{:.2}×", n / 1000.0 / c))
            .collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} / {} / {} µs | {} |",
            op.title(),
            us(ns[0]),
            us(ns[1]),
            us(ns[2]),
            us(ns[3]),
            compiled,
            runtime,
            python,
            ratios.join(", ")
        );
    }
    t
}

/// The docs' claims held against the measurement: one line per claim more than 2× off, and
/// the ratios the docs imply (compiled vs Python, runtime vs Python).
fn verdicts(f: &InProcess) -> String {
    let mut t = String::new();
    for (op, ns) in Op::ALL.iter().zip(&f.ns) {
        let [compiled, runtime, python] = op.claim();
        for (who, claim, measured) in [
            ("native", compiled, ns[0]),
            ("Rhai", runtime, ns[1]),
            ("WASM", runtime, ns[2]),
            ("Python", python, ns[3]),
        ] {
            let ratio = measured / 1000.0 / claim;
            let verdict = if ratio > 2.0 {
                format!("{ratio:.1}× slower than the docs claim")
            } else if ratio < 0.5 {
                format!("{:.1}× faster than the docs claim", 1.0 / ratio)
            } else {
                continue;
            };
            let _ = writeln!(
                t,
                "- {}, {who}: claimed {claim} µs, measured {}: {verdict}.",
                op.title(),
                us(measured)
            );
        }
        let _ = writeln!(
            t,
            "- {}: native is {:.1}× CPython (the docs imply {:.0}×), Rhai {:.2}× and WASM {:.2}× \
             CPython (the docs imply {:.1}×).",
            op.title(),
            ns[3] / ns[0],
            python / compiled,
            ns[3] / ns[1],
            ns[3] / ns[2],
            python / runtime
        );
    }
    t
}

/// `1.23 µs` from nanoseconds.
fn us(ns: f64) -> String {
    let us = ns / 1000.0;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else if us >= 10.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.2} µs")
    }
}

/// One target over the bus.
struct BusFigures {
    p50_us: f64,
    throughput: f64,
    cpu_us: f64,
    errors: usize,
}

/// Sends `body` to `subject` and tells whether the reply is an error reply.
async fn send(client: &Client, subject: &str, body: Bytes) -> Result<async_nats::Message, String> {
    let reply = client
        .request(subject.to_string(), body)
        .await
        .map_err(|e| format!("{subject}: {e}"))?;
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_ERROR_CODE))
    {
        return Err(format!("{subject}: error {code}"));
    }
    Ok(reply)
}

/// Runs `requests` requests with `inflight` in flight; returns the elapsed time, every
/// latency, and how many failed.
async fn load(
    client: &Client,
    subject: &str,
    body: &Bytes,
    inflight: usize,
    requests: usize,
) -> (Duration, Vec<Duration>, usize) {
    let remaining = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let client = client.clone();
            let subject = subject.to_string();
            let body = body.clone();
            let remaining = remaining.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    if send(&client, &subject, body.clone()).await.is_err() {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("load task");
        latencies.extend(l);
        errors += e;
    }
    (started.elapsed(), latencies, errors)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn measure(
    client: &Client,
    subject: &str,
    body: &Bytes,
    pids: &[u32],
    requests: usize,
) -> BusFigures {
    let (_, _, warm_errors) = load(client, subject, body, 1, 300).await;
    assert_eq!(warm_errors, 0, "{subject} answers with errors");
    let (_, mut sequential, _) = load(client, subject, body, 1, (requests / 5).max(500)).await;
    sequential.sort();
    let cpu = |pids: &[u32]| pids.iter().map(|p| shared::cpu_ns(*p)).sum::<u64>();
    let before = cpu(pids);
    let (elapsed, _, errors) = load(client, subject, body, 64, requests).await;
    BusFigures {
        p50_us: percentile(&sequential, 50).as_secs_f64() * 1e6,
        throughput: requests as f64 / elapsed.as_secs_f64(),
        cpu_us: (cpu(pids) - before) as f64 / requests as f64 / 1000.0,
        errors,
    }
}

/// Over-the-bus figures: `targets[op][impl]`, and the bare echo with each op's body.
struct OverTheBus {
    bare: Vec<BusFigures>,
    targets: Vec<Vec<BusFigures>>,
}

async fn over_the_bus(server: &common::NatsServer, python: &Path, requests: usize) -> OverTheBus {
    let client = server.client().await;
    let url = server.url();
    let bare = shared::spawn_role(shared::BARE_ROLE, &url, &[]);
    let plugins = plugins_dir();
    let data = tempfile::tempdir().expect("temp dir");
    let plugins_path = plugins.path().to_string_lossy().to_string();
    let data_path = data.path().to_string_lossy().to_string();
    let worker = shared::spawn_role(
        WORKER_ROLE,
        &url,
        &[(PLUGINS_ENV, &plugins_path), ("MOFA_DATA_DIR", &data_path)],
    );
    let words = serde_json::to_string(&RhaiConfig::default().profanity).expect("words");
    let py = Command::new(python)
        .arg(here().join("ops.py"))
        .args(["serve", &url, PYTHON_PREFIX, &words])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python worker starts");
    let py = shared::wait_ready(py, "the python worker");
    let subjects = |op: Op| {
        [
            format!("mofa.exec.{}_native", op.name()),
            format!("mofa.exec.{}_rhai", op.name()),
            format!("mofa.exec.{}_wasm", op.name()),
            format!("{PYTHON_PREFIX}.{}", op.name()),
        ]
    };
    let pids = [worker.id(), worker.id(), worker.id(), py.id()];
    // Every implementation answers every check input as the native function does.
    for op in Op::ALL {
        for check in op.checks() {
            let want = op.apply(&check).expect("native answers");
            for subject in subjects(op) {
                let reply = send(&client, &subject, wire::encode(&check))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let got: Value = wire::decode(&reply.payload).expect("a MessagePack reply");
                assert!(same(&want, &got), "{subject}: {got} != {want}");
            }
        }
    }
    let mut figures = OverTheBus {
        bare: Vec::new(),
        targets: Vec::new(),
    };
    for op in Op::ALL {
        let body = wire::encode(&op.input());
        figures
            .bare
            .push(measure(&client, shared::BARE_SUBJECT, &body, &[bare.id()], requests).await);
        let mut row = Vec::new();
        for (subject, pid) in subjects(op).iter().zip(pids) {
            row.push(measure(&client, subject, &body, &[pid], requests).await);
        }
        figures.targets.push(row);
    }
    for mut child in [bare, worker, py] {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("{}", over_the_bus_table(&figures, requests));
    figures
}

fn over_the_bus_table(f: &OverTheBus, requests: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| operation | | bare echo | native | Rhai | WASM | nats-py worker |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for ((op, bare), row) in Op::ALL.iter().zip(&f.bare).zip(&f.targets) {
        let cell = |v: f64, base: f64, unit: &str| format!("{} ({:.2}×)", fmt(v, unit), v / base);
        let p50: Vec<String> = row
            .iter()
            .map(|r| cell(r.p50_us, bare.p50_us, "µs"))
            .collect();
        let tp: Vec<String> = row
            .iter()
            .map(|r| cell(r.throughput, bare.throughput, "/s"))
            .collect();
        let python_cpu = row[3].cpu_us;
        let cpu: Vec<String> = row
            .iter()
            .map(|r| {
                format!(
                    "{} ({:.2}× Python)",
                    fmt(r.cpu_us, "µs"),
                    r.cpu_us / python_cpu
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "| {} | p50 round trip | {} | {} |",
            op.title(),
            fmt(bare.p50_us, "µs"),
            p50.join(" | ")
        );
        let _ = writeln!(
            t,
            "| | throughput, 64 in flight | {} | {} |",
            fmt(bare.throughput, "/s"),
            tp.join(" | ")
        );
        let _ = writeln!(
            t,
            "| | responder CPU per request | {} | {} |",
            fmt(bare.cpu_us, "µs"),
            cpu.join(" | ")
        );
        let errors: usize = row.iter().map(|r| r.errors).sum();
        if errors > 0 {
            let _ = writeln!(t, "| | failed requests | | {errors} of {} |", 4 * requests);
        }
    }
    t
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{v:.0}/s"),
        _ if v >= 100.0 => format!("{v:.0} {unit}"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// One point of a curve: `n` requests to `subject` with `inflight` in flight. Returns the
/// throughput per second, p99 (µs), CPU per request summed over `pids` (µs) and failures.
async fn curve_point(
    client: &Client,
    subject: &str,
    body: &Bytes,
    pids: &[u32],
    inflight: usize,
    n: usize,
) -> (f64, f64, f64, usize) {
    let cpu = || pids.iter().map(|p| shared::cpu_ns(*p)).sum::<u64>();
    let before = cpu();
    let (elapsed, mut latencies, errors) = load(client, subject, body, inflight, n).await;
    let cpu_us = (cpu() - before) as f64 / n as f64 / 1000.0;
    latencies.sort();
    let p99 = percentile(&latencies, 99).as_secs_f64() * 1e6;
    (n as f64 / elapsed.as_secs_f64(), p99, cpu_us, errors)
}

/// The scaling curves and their table.
struct Scaling {
    curves: Vec<chart::Curve>,
    table: String,
}

/// The scaling curves: discount rule per kind, 1–3 workers, and the bare echo.
async fn scaling(server: &common::NatsServer, requests: usize) -> Scaling {
    let client = server.client().await;
    let url = server.url();
    let body = wire::encode(&Value::Map(vec![
        (Value::from("price"), Value::from(100)),
        (Value::from("customer_tier"), Value::from("gold")),
    ]));
    let plugins = tempfile::tempdir().expect("temp dir");
    for file in ["discount.rhai", "discount_wasm.wasm"] {
        std::fs::copy(common::repo_plugins().join(file), plugins.path().join(file))
            .expect("plugin copied");
    }
    let kinds = [
        ("native", "discount_native"),
        ("Rhai", "discount"),
        ("WASM", "discount_wasm"),
    ];
    let mut curves = Vec::new();
    let per_point = |inflight: usize| (inflight * 50).clamp(requests / 2, requests * 3);
    let mut table = String::from(
        "| target | workers | in flight | throughput | p99 | CPU per request (all workers) | failed |\n|---|---|---|---|---|---|---|\n",
    );

    let bare = shared::spawn_role(shared::BARE_ROLE, &url, &[]);
    let mut points = Vec::new();
    for inflight in INFLIGHT {
        let (tp, p99, cpu, errors) = curve_point(
            &client,
            shared::BARE_SUBJECT,
            &body,
            &[bare.id()],
            inflight,
            per_point(inflight),
        )
        .await;
        let _ = writeln!(
            table,
            "| bare echo | – | {inflight} | {tp:.0}/s | {} | {cpu:.1} µs | {errors} |",
            fmt(p99, "µs")
        );
        points.push((inflight, tp, p99));
    }
    curves.push(chart::Curve {
        kind: "bare echo".into(),
        workers: 0,
        points,
    });
    let mut bare = bare;
    let _ = bare.kill();
    let _ = bare.wait();

    let mut workers: Vec<Child> = Vec::new();
    let mut data = Vec::new();
    for count in 1..=3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = format!("scaling{count}{}", nuid::next().as_str());
        let worker = Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args(["worker", "--nats", &url, "--name", &name, "--plugins"])
            .arg(plugins.path())
            .env("MOFA_DATA_DIR", dir.path())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("worker starts");
        workers.push(worker);
        data.push(dir);
        // It answers the Services API once every plugin is subscribed.
        let ping = format!("$SRV.PING.mofa.{name}");
        let started = Instant::now();
        while client.request(ping.clone(), Bytes::new()).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "worker {count} not ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pids: Vec<u32> = workers.iter().map(Child::id).collect();
        for (kind, plugin) in kinds {
            let subject = format!("mofa.exec.{plugin}");
            let (_, _, warm_errors) = load(&client, &subject, &body, 16, 2000).await;
            assert_eq!(warm_errors, 0, "{plugin} answers with errors");
            let mut points = Vec::new();
            for inflight in INFLIGHT {
                let (tp, p99, cpu, errors) = curve_point(
                    &client,
                    &subject,
                    &body,
                    &pids,
                    inflight,
                    per_point(inflight),
                )
                .await;
                let _ = writeln!(
                    table,
                    "| {kind} ({plugin}) | {count} | {inflight} | {tp:.0}/s | {} | {cpu:.1} µs | {errors} |",
                    fmt(p99, "µs")
                );
                points.push((inflight, tp, p99));
            }
            curves.push(chart::Curve {
                kind: kind.into(),
                workers: count,
                points,
            });
        }
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    println!("{table}");
    Scaling { curves, table }
}

/// The machine, for the report: CPU model and cores, memory, kernel, nats-server, Python, rustc.
fn machine(python: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let output = |program: &Path, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text).trim().to_string()
            })
            .unwrap_or_else(|_| "unknown".into())
    };
    let nats = mofa_bus::nats_server::current()
        .map(|(_, v)| format!("nats-server {}.{}.{}", v.0, v.1, v.2))
        .unwrap_or_else(|_| "nats-server unknown".into());
    format!(
        "{model}, {cores} cores, {memory_gib:.0} GiB; Linux {}; {nats}; {}; {}",
        output(Path::new("uname"), "-r"),
        output(python, "--version"),
        output(Path::new("rustc"), "--version"),
    )
}

/// Runs the comparison's worker: the three native operations embedded with
/// `Worker::start_with`, the Rhai scripts and WASM modules from the plugins directory.
fn compare_worker() {
    let url = std::env::var(shared::URL_ENV).expect("MOFA_BENCH_URL");
    let plugins = std::env::var(PLUGINS_ENV).expect("MOFA_BENCH_PLUGINS");
    let data = std::env::var("MOFA_DATA_DIR").expect("MOFA_DATA_DIR");
    let config = mofa_bus::config::WorkerConfig {
        nats_url: url,
        plugins_dir: plugins.into(),
        data_dir: data.into(),
        ..Default::default()
    };
    let runtime = mofa_bus::worker::runtime::build(config.async_threads).expect("runtime");
    runtime.block_on(async {
        let worker = mofa_bus::worker::Worker::start_with(config, native::NativeOp::all())
            .await
            .expect("worker starts");
        assert!(
            worker.load_failures().is_empty(),
            "plugins failed to load: {:?}",
            worker.load_failures()
        );
        println!("ready");
        std::future::pending::<()>().await;
    });
}

fn main() {
    match std::env::var(shared::ROLE_ENV).as_deref() {
        Ok(shared::BARE_ROLE) => {
            let url = std::env::var(shared::URL_ENV).expect("MOFA_BENCH_URL");
            shared::run_bare_echo(&url);
            return;
        }
        Ok(WORKER_ROLE) => return compare_worker(),
        _ => {}
    }
    let requests: usize = std::env::var("MOFA_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let sections = ["in-process", "over-the-bus", "scaling"];
    let only: Vec<&str> = sections
        .into_iter()
        .filter(|s| std::env::args().any(|a| a == *s))
        .collect();
    let run = |section: &str| only.is_empty() || only.contains(&section);
    let python = shared::python();

    let inproc = run("in-process").then(|| {
        println!("\nin-process, per call (Python: inside CPython, no bus):");
        in_process(&python)
    });
    let server = common::NatsServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bus = run("over-the-bus").then(|| {
        println!("\nover the bus ({requests} requests at 64 in flight per target; ratios against the bare echo):");
        runtime.block_on(over_the_bus(&server, &python, requests))
    });
    let scaled = run("scaling").then(|| {
        println!("\nscaling: the discount rule, 1–3 `mofa worker` processes:");
        runtime.block_on(scaling(&server, requests))
    });
    let (Some(inproc), Some(bus), Some(scaled)) = (inproc, bus, scaled) else {
        println!("(not every section ran: docs/ left as it is)");
        return;
    };
    write_docs(&python, &inproc, &bus, &scaled, requests);
}

fn write_docs(
    python: &Path,
    inproc: &InProcess,
    bus: &OverTheBus,
    scaled: &Scaling,
    requests: usize,
) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).expect("docs/");
    let groups: Vec<&str> = Op::ALL.iter().map(|op| op.title()).collect();
    let claims: Vec<Vec<f64>> = Op::ALL
        .iter()
        .map(|op| {
            let [c, r, p] = op.claim();
            vec![c, r, r, p]
        })
        .collect();
    let machine = machine(python);
    chart::bars(
        &docs.join("compare.svg"),
        &format!(
            "mofa-bus: one operation, four ways — {}",
            short_machine(&machine)
        ),
        &[
            chart::Bars {
                title: "in-process, per call",
                groups: &groups,
                series: &IMPLS,
                values: inproc
                    .ns
                    .iter()
                    .map(|row| row.iter().map(|ns| ns / 1000.0).collect())
                    .collect(),
                claims: Some(claims),
            },
            chart::Bars {
                title: "over the bus, responder CPU per request",
                groups: &groups,
                series: &["native", "Rhai", "WASM", "Python (nats-py)"],
                values: bus
                    .targets
                    .iter()
                    .map(|row| row.iter().map(|r| r.cpu_us).collect())
                    .collect(),
                claims: None,
            },
        ],
    )
    .expect("docs/compare.svg");
    chart::scaling(
        &docs.join("scaling.svg"),
        &format!(
            "mofa-bus scaling: the discount rule — {}",
            short_machine(&machine)
        ),
        &["native", "Rhai", "WASM"],
        &scaled.curves,
    )
    .expect("docs/scaling.svg");

    let mut md = String::new();
    let _ = writeln!(md, "# Performance: one operation, four ways\n");
    let _ = writeln!(
        md,
        "Written by `cargo bench --bench compare` (`benches/compare.rs`); every figure below comes \
         from one run of that command on this machine:\n\n> {machine}\n"
    );
    let _ = writeln!(
        md,
        "The operations, each written as a native plugin (`benches/compare/native.rs`), a Rhai \
         script (`benches/compare/*.rhai`, the rule set is `plugins/rules/content_moderation.rhai`), \
         a WASM module (`plugins/wasm/compare_ops`) and plain Python (`benches/compare/ops.py`), \
         every output checked against the native one before timing:\n\n\
         - JSON parsing: a 1.2 KB order document parsed and its line items summed;\n\
         - regex match: an e-mail pattern over a 200-byte message;\n\
         - rule evaluation: the content-moderation rule set on a message no rule matches, so all \
         four rules run.\n"
    );
    let _ = writeln!(md, "![the comparison](compare.svg)\n");
    let _ = writeln!(
        md,
        "## In-process, per call\n\nNative: the Rust function on the request value. Rhai: the \
         engine call, value conversion included. WASM: a fresh instance per call (the worker's \
         contract), input encoded and output decoded, fuel, memory cap and deadline on. CPython: \
         the function timed in the interpreter on the decoded input. The docs' claim for \
         \"runtime\" is compared with both Rhai and WASM.\n"
    );
    md.push_str(&in_process_table(inproc));
    let _ = writeln!(
        md,
        "\nWhere the docs' figures are off by more than 2×, and the speed-ups they imply \
         (how many times faster than CPython each kind is):\n"
    );
    md.push_str(&verdicts(inproc));
    let _ = writeln!(
        md,
        "\n## Over the bus\n\nOne worker serves the native, Rhai and WASM plugins; a plain \
         nats-py worker (MessagePack in, the same Python function, MessagePack out) serves the \
         Python column; the bare async-nats echo answers the same body and is the baseline of \
         every ratio. p50: {} sequential round trips; throughput and CPU: {requests} requests at \
         64 in flight. CPU per request is the responding process's (user + system, from \
         /proc), the figure that carries over to a bigger machine.\n",
        (requests / 5).max(500)
    );
    md.push_str(&over_the_bus_table(bus, requests));
    let _ = writeln!(
        md,
        "\n## Scaling\n\nThroughput and p99 against requests in flight for the discount rule \
         (`discount_native`, `discount.rhai`, `discount_wasm.wasm`) on 1, 2 and 3 `mofa worker` \
         processes, and the bare echo. On this machine the nats-server, the load generator and \
         every worker share {} cores, so more workers cannot add throughput once the cores are \
         busy; CPU per request (summed over the workers) is the figure to size a fleet with.\n\n\
         ![scaling](scaling.svg)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    md.push_str(&scaled.table);
    std::fs::write(docs.join("performance.md"), md).expect("docs/performance.md");
    println!("wrote docs/performance.md, docs/compare.svg and docs/scaling.svg");
}

/// `<model>, N cores`: the chart captions' machine.
fn short_machine(machine: &str) -> String {
    machine.split(';').next().unwrap_or(machine).to_string()
}
