//! OpenTelemetry across the bus, checked from outside: `mofa worker` processes export over
//! OTLP/HTTP to a receiver that decodes with the official protobuf definitions
//! (`opentelemetry-proto`, in Python), and requests come from nats-py with a W3C
//! `traceparent` it made itself.
//!
//! - a worker's span is the child of the caller's `traceparent`, with the messaging attributes,
//!   and the result event and JSON log lines carry the trace id;
//! - a Rhai `call_plugin` chain across two workers, started by `mofa exec`, is one trace;
//! - the sampler decides before a span is made, and a chain keeps the caller's decision;
//! - metrics arrive with the counts the worker answered (requests, errors by code, duration,
//!   reload outcomes), and `mofa stats` shows the reload success rate;
//! - with no endpoint, or with `OTEL_SDK_DISABLED=true`, nothing is exported.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use mofa_bus::wire::{self, Value};

fn support() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otel")
}

/// The venv's python with the receiver's and the client's pinned packages.
fn python() -> PathBuf {
    python_venv(
        "otel-test",
        &support().join("requirements.txt"),
        "the telemetry tests",
    )
}

/// The OTLP receiver: what it decoded, one JSON record a line.
struct Receiver {
    child: Child,
    _stdin: ChildStdin,
    lines: Lines,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let mut child = Command::new(python())
            .arg(support().join("receiver.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("receiver starts");
        let stdin = child.stdin.take().expect("stdin");
        let lines = Lines::of(child.stdout.take().expect("stdout"), "the OTLP receiver");
        let first = lines.next_json();
        let port = first["port"].as_u64().expect("the receiver says its port") as u16;
        Receiver {
            child,
            _stdin: stdin,
            lines,
            port,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Records until `done` says it has seen enough, within `limit`; returns them all.
    fn collect_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let started = Instant::now();
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = limit.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "the receiver did not get what the test waits for within {limit:?}; it got:\n{}",
                seen.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            if let Some(line) = self
                .lines
                .try_next_within(left.min(Duration::from_millis(200)))
            {
                seen.push(serde_json::from_str(&line).expect("the receiver prints JSON"));
            }
        }
        seen
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `mofa worker` process on `server` serving `plugins`, with `env` set and stderr kept.
fn worker_process(
    server: &NatsServer,
    plugins: &Path,
    name: &str,
    env: &[(&str, String)],
    args: &[&str],
) -> (WorkerProcess, Lines) {
    let mut command = WorkerCommand::new(&server.url(), plugins)
        .name(name)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        // Export within a fraction of a second instead of the SDK's default 5 s / 60 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300");
    for (key, value) in env {
        command = command.env(key, value);
    }
    command.spawn_logged(name)
}

fn traced_request(
    server: &NatsServer,
    plugin: &str,
    input: &str,
    traceparent: &str,
) -> serde_json::Value {
    let output = Command::new(python())
        .arg(support().join("traced_request.py"))
        .args([&server.url(), plugin, input, traceparent])
        .output()
        .expect("nats-py client runs");
    assert!(
        output.status.success(),
        "nats-py client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("client prints JSON")
}

fn spans_named<'a>(records: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|r| r["signal"] == "span" && r["name"] == name)
        .collect()
}

/// Two workers' plugins: `front` calls `back` (`front(x) = back(x) + 1`, `back(x) = 10 x`).
fn chain() -> (tempfile::TempDir, tempfile::TempDir) {
    let front = plugins_dir(&[(
        "front.rhai",
        r#"fn execute(input) { call_plugin("back", input) + 1 }"#,
    )]);
    let back = plugins_dir(&[("back.rhai", r#"fn execute(input) { input * 10 }"#)]);
    (front, back)
}

/// SpanKind in the OTLP protobuf.
const SPAN_KIND_INTERNAL: u64 = 1;
const SPAN_KIND_CLIENT: u64 = 3;
const SPAN_KIND_CONSUMER: u64 = 5;
/// Status code ERROR in the OTLP protobuf.
const STATUS_ERROR: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_span_is_the_child_of_the_traceparent_a_nats_py_client_sent() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[(
        "traced.rhai",
        r#"fn execute(input) {
            print(`pricing ${input.price}`);
            if input.price < 0 { throw #{ code: 400, message: "price must not be negative" }; }
            input.price * 2
        }"#,
    )]);
    let (_worker, logs) = worker_process(
        &server,
        plugins.path(),
        "traced-worker",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())],
        &["--log-format", "json"],
    );
    let client = server.client().await;
    wait_until_listed(&client, "traced").await;
    let mut events = client
        .subscribe("mofa.events.result.traced")
        .await
        .expect("subscribed");
    client.flush().await.expect("flushed");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let answer = traced_request(
        &server,
        "traced",
        r#"{"price": 21}"#,
        &format!("00-{trace_id}-{parent}-01"),
    );
    assert_eq!(answer["reply"], 42);

    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        !spans_named(seen, "mofa.exec traced").is_empty()
    });
    let span = spans_named(&records, "mofa.exec traced")[0];
    assert_eq!(span["trace_id"], trace_id, "the caller's trace: {span}");
    assert_eq!(
        span["parent_span_id"], parent,
        "the caller's span is the parent: {span}"
    );
    assert_eq!(span["kind"], SPAN_KIND_CONSUMER);
    assert_eq!(span["service"], "mofa-worker");
    let attributes = &span["attributes"];
    assert_eq!(attributes["messaging.system"], "nats");
    assert_eq!(attributes["messaging.destination.name"], "mofa.exec.traced");
    assert_eq!(attributes["messaging.operation.type"], "process");
    assert_eq!(attributes["messaging.message.body.size"], 8, "{attributes}");
    assert_eq!(attributes["mofa.plugin"], "traced");
    assert_eq!(attributes["mofa.kind"], "rhai");
    assert_eq!(attributes["mofa.worker"], "traced-worker");
    for phase in [
        "mofa.queue_wait_us",
        "mofa.decode_us",
        "mofa.execute_us",
        "mofa.reply_us",
    ] {
        assert!(attributes[phase].is_i64(), "{phase} recorded: {attributes}");
    }

    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a result event")
        .expect("subscription open");
    let event = wire::to_json(&wire::decode(&event.payload).expect("MessagePack"));
    assert_eq!(
        event["trace_id"], trace_id,
        "the result event names the trace: {event}"
    );

    // A log line written while the request ran carries its trace and span ids.
    let started = Instant::now();
    let logged = loop {
        let line = logs.next_within(Duration::from_secs(10));
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            panic!("--log-format json wrote a line that is not JSON: {line}");
        };
        if json["fields"]["message"] == "pricing 21" {
            break json;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no log line of the script"
        );
    };
    assert_eq!(logged["span"]["trace_id"], trace_id, "{logged}");
    assert_eq!(logged["span"]["span_id"], span["span_id"], "{logged}");

    // An error reply: the span says so, with the code.
    let failed = traced_request(
        &server,
        "traced",
        r#"{"price": -1}"#,
        &format!("00-{trace_id}-{parent}-01"),
    );
    assert_eq!(
        failed["headers"]["Nats-Service-Error-Code"], "400",
        "{failed}"
    );
    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        spans_named(seen, "mofa.exec traced")
            .iter()
            .any(|s| s["status"] == STATUS_ERROR)
    });
    let span = spans_named(&records, "mofa.exec traced")
        .into_iter()
        .find(|s| s["status"] == STATUS_ERROR)
        .expect("the failed request's span");
    assert_eq!(span["attributes"]["error.type"], "400", "{span}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_plugin_chain_across_two_workers_started_by_mofa_exec_is_one_trace() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let (front, back) = chain();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let (_front, _front_logs) = worker_process(&server, front.path(), "front-worker", &env, &[]);
    let (_back, _back_logs) = worker_process(&server, back.path(), "back-worker", &env, &[]);
    let client = server.client().await;
    wait_until_listed(&client, "front").await;
    wait_until_listed(&client, "back").await;

    let output = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["exec", "front", "4", "--verbose", "--nats", &server.url()])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("mofa exec runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "41");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let trace_id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("trace_id: "))
        .unwrap_or_else(|| panic!("mofa exec --verbose prints the trace id: {stderr}"))
        .trim()
        .to_string();
    assert_eq!(trace_id.len(), 32);

    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        ["mofa.exec front", "mofa.call back", "mofa.exec back"]
            .iter()
            .all(|name| !spans_named(seen, name).is_empty())
    });
    let one = |name: &str| spans_named(&records, name)[0].clone();
    let (exec_front, call, exec_back) = (
        one("mofa.exec front"),
        one("mofa.call back"),
        one("mofa.exec back"),
    );
    for span in [&exec_front, &call, &exec_back] {
        assert_eq!(span["trace_id"], trace_id.as_str(), "one trace: {span}");
    }
    assert_eq!(call["parent_span_id"], exec_front["span_id"], "{call}");
    assert_eq!(call["kind"], SPAN_KIND_CLIENT);
    assert_eq!(call["attributes"]["mofa.call.local"], false);
    assert_eq!(exec_back["parent_span_id"], call["span_id"], "{exec_back}");
    assert_eq!(exec_front["attributes"]["mofa.worker"], "front-worker");
    assert_eq!(exec_back["attributes"]["mofa.worker"], "back-worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_call_is_an_internal_child_span() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[
        (
            "outer.rhai",
            r#"fn execute(input) { call_plugin("inner", input) }"#,
        ),
        ("inner.rhai", r#"fn execute(input) { input + 1 }"#),
    ]);
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let (_worker, _logs) = worker_process(&server, plugins.path(), "local-worker", &env, &[]);
    let client = server.client().await;
    wait_until_listed(&client, "outer").await;
    assert_eq!(
        call(&client, "outer", Value::from(1)).await.expect_value(),
        Value::from(2)
    );
    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        !spans_named(seen, "mofa.call inner").is_empty()
            && !spans_named(seen, "mofa.exec outer").is_empty()
    });
    let outer = spans_named(&records, "mofa.exec outer")[0];
    let inner = spans_named(&records, "mofa.call inner")[0];
    assert_eq!(inner["parent_span_id"], outer["span_id"]);
    assert_eq!(inner["trace_id"], outer["trace_id"]);
    assert_eq!(inner["kind"], SPAN_KIND_INTERNAL);
    assert_eq!(inner["attributes"]["mofa.call.local"], true);
}

/// Head sampling: the front worker samples no new trace (`parentbased_traceidratio` at 0), the
/// back worker every one (the default `parentbased_always_on`). A caller that did not sample
/// (flag 00) and a request that starts a trace are traced on neither worker: the front's calls
/// carry their trace with the sampled flag clear, so the back follows it instead of starting a
/// trace of its own. A caller that sampled (flag 01) is traced on both, as one trace. The
/// result events name each request's trace either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_decides_before_the_span_and_a_chain_keeps_the_callers_decision() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let (front, back) = chain();
    let export = ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    let (_front, _front_logs) = worker_process(
        &server,
        front.path(),
        "front-worker",
        &[
            export.clone(),
            (
                "OTEL_TRACES_SAMPLER",
                "parentbased_traceidratio".to_string(),
            ),
            ("OTEL_TRACES_SAMPLER_ARG", "0".to_string()),
        ],
        &[],
    );
    let (_back, _back_logs) = worker_process(
        &server,
        back.path(),
        "back-worker",
        &[
            export,
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_string()),
        ],
        &[],
    );
    let client = server.client().await;
    wait_until_listed(&client, "front").await;
    wait_until_listed(&client, "back").await;
    let mut events = client
        .subscribe("mofa.events.result.>")
        .await
        .expect("subscribed");
    client.flush().await.expect("flushed");

    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let answer = traced_request(
        &server,
        "front",
        "4",
        &format!("00-{unsampled}-b7ad6b7169203331-00"),
    );
    assert_eq!(answer["reply"], 41, "{answer}");
    assert_eq!(
        call(&client, "front", Value::from(5)).await.expect_value(),
        Value::from(51)
    );
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = traced_request(
        &server,
        "front",
        "6",
        &format!("00-{sampled}-00f067aa0ba902b7-01"),
    );
    assert_eq!(answer["reply"], 61, "{answer}");

    // Spans end, and are exported, in order: once the sampled request's spans from both
    // workers are in, any span of the two requests before would be too.
    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        ["mofa.exec front", "mofa.call back", "mofa.exec back"]
            .iter()
            .all(|name| {
                spans_named(seen, name)
                    .iter()
                    .any(|s| s["trace_id"] == sampled)
            })
    });
    let spans: Vec<_> = records.iter().filter(|r| r["signal"] == "span").collect();
    assert_eq!(
        spans.len(),
        3,
        "only the sampled request is traced: {spans:?}"
    );
    for span in &spans {
        assert_eq!(span["trace_id"], sampled, "{span}");
    }

    // Result events: front and back name the same trace for each request.
    let mut named = Vec::new();
    while named.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("six result events")
            .expect("subscription open");
        let body = wire::to_json(&wire::decode(&event.payload).expect("MessagePack"));
        let trace = body["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a result event names its trace: {body}"))
            .to_string();
        named.push((event.subject.to_string(), trace));
    }
    let traces_of = |subject: &str| -> Vec<String> {
        named
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, t)| t.clone())
            .collect()
    };
    let (fronts, backs) = (
        traces_of("mofa.events.result.front"),
        traces_of("mofa.events.result.back"),
    );
    assert_eq!(
        fronts, backs,
        "each call continues its caller's trace: {named:?}"
    );
    assert_eq!(fronts[0], unsampled);
    assert_eq!(fronts[2], sampled);
    let started = &fronts[1];
    assert!(
        started.len() == 32 && started != unsampled && started != sampled,
        "a request that starts a trace gets a trace id of its own: {named:?}"
    );
}

/// The latest value of a metric data point matching `attributes`.
fn latest(records: &[serde_json::Value], name: &str, attributes: &[(&str, &str)]) -> Option<u64> {
    records
        .iter()
        .rev()
        .filter(|r| r["signal"] == "metric" && r["name"] == name)
        .find(|r| {
            attributes
                .iter()
                .all(|(k, v)| r["attributes"][*k].as_str() == Some(*v))
        })
        .and_then(|r| r["value"].as_u64().or(r["count"].as_u64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_with_the_counts_and_mofa_stats_shows_the_reload_success_rate() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[(
        "metered.rhai",
        r#"fn execute(input) {
            if input < 0 { throw #{ code: 400, message: "negative" }; }
            input
        }"#,
    )]);
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let (_worker, _logs) = worker_process(&server, plugins.path(), "metered-worker", &env, &[]);
    let client = server.client().await;
    wait_until_listed(&client, "metered").await;
    for i in 0..5 {
        assert_eq!(
            call(&client, "metered", Value::from(i))
                .await
                .expect_value(),
            Value::from(i)
        );
    }
    assert_eq!(
        call(&client, "metered", Value::from(-1)).await.code(),
        Some(400)
    );

    // One good revision and one that does not compile: completed 1, failed 1, rolled back 1.
    let sources = tempfile::tempdir().expect("temp dir");
    let publish = |source: &str| {
        let file = sources.path().join("metered.rhai");
        std::fs::write(&file, source).expect("written");
        let out = mofa(&["publish", file.to_str().expect("utf-8")], &server.url());
        assert!(out.status.success(), "publish: {out:?}");
    };
    let mut reloads = client
        .subscribe("mofa.events.reload.metered")
        .await
        .expect("subscribed");
    client.flush().await.expect("flushed");
    publish("fn execute(input) { input }");
    // `mofa publish` refuses a revision that does not build; a publisher that bypasses it
    // (any client allowed to write the bucket) does not: put one in the bucket directly.
    let broken = sources.path().join("metered.rhai");
    std::fs::write(&broken, "fn execute(input) { input +* }").expect("written");
    let bucket = mofa_bus::distribution::Distribution::open(
        client.clone(),
        &mofa_bus::config::ReloadConfig::default(),
    )
    .await
    .expect("the plugins bucket");
    let (name, record) = bucket
        .record_for_file(&broken, None, mofa_bus::distribution::INLINE_LIMIT)
        .await
        .expect("a record");
    bucket.put(&name, &record).await.expect("put");
    let mut outcomes = Vec::new();
    while !outcomes.iter().any(|s| s == "rolled_back") {
        let event = tokio::time::timeout(Duration::from_secs(20), reloads.next())
            .await
            .expect("reload events")
            .expect("open");
        let event = wire::to_json(&wire::decode(&event.payload).expect("MessagePack"));
        outcomes.push(event["status"].as_str().unwrap_or_default().to_string());
    }

    let worker = ("mofa.worker", "metered-worker");
    let plugin = ("mofa.plugin", "metered");
    let records = receiver.collect_until(Duration::from_secs(30), |seen| {
        latest(seen, "mofa.requests", &[worker, plugin]) == Some(6)
            && latest(seen, "mofa.errors", &[plugin, ("error.type", "400")]) == Some(1)
            && latest(
                seen,
                "mofa.reloads",
                &[plugin, ("mofa.outcome", "completed")],
            ) == Some(1)
            && latest(seen, "mofa.reloads", &[plugin, ("mofa.outcome", "failed")]) == Some(1)
            && latest(
                seen,
                "mofa.reloads",
                &[plugin, ("mofa.outcome", "rolled_back")],
            ) == Some(1)
    });
    let ok = latest(
        &records,
        "mofa.request.duration",
        &[plugin, ("error.type", "none")],
    );
    assert_eq!(ok, Some(5), "five successes in the duration histogram");
    let failed = latest(
        &records,
        "mofa.request.duration",
        &[plugin, ("error.type", "400")],
    );
    assert_eq!(failed, Some(1));
    assert!(latest(&records, "mofa.in_flight", &[plugin]).is_some());
    assert!(latest(&records, "mofa.sandbox.queue", &[worker]).is_some());

    let out = mofa(&["stats", "--json"], &server.url());
    assert!(out.status.success(), "{out:?}");
    let row: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .find(|r| r["plugin"] == "metered")
        .expect("a row for the plugin");
    assert_eq!(row["requests"], 6, "{row}");
    assert_eq!(row["errors_by_code"]["400"], 1, "{row}");
    assert_eq!(row["reloads_completed"], 1, "{row}");
    assert_eq!(row["reloads_failed"], 1, "{row}");
    assert_eq!(row["reloads_rolled_back"], 1, "{row}");
    assert_eq!(row["reload_success_rate"], 0.5, "{row}");
    let table = mofa(&["stats"], &server.url());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("SUCCESS") && text.contains("50.0%"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_or_with_the_sdk_disabled_nothing_is_exported() {
    let receiver = Receiver::start();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[("quiet.rhai", "fn execute(input) { input }")]);
    let disabled = plugins_dir(&[("muted.rhai", "fn execute(input) { input }")]);
    let control = plugins_dir(&[("loud.rhai", "fn execute(input) { input }")]);
    let name = |service: &str| ("OTEL_SERVICE_NAME", service.to_string());
    // No endpoint at all, and OTLP's default port is not listened on by anyone here: the
    // worker must not even try. The second has the endpoint but the SDK off.
    let (_quiet, _) = worker_process(&server, plugins.path(), "quiet", &[name("quiet")], &[]);
    let (_muted, _) = worker_process(
        &server,
        disabled.path(),
        "muted",
        &[
            name("muted"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_SDK_DISABLED", "true".to_string()),
        ],
        &[],
    );
    let (_loud, _) = worker_process(
        &server,
        control.path(),
        "loud",
        &[
            name("loud"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ],
        &[],
    );
    let client = server.client().await;
    for plugin in ["quiet", "muted", "loud"] {
        wait_until_listed(&client, plugin).await;
    }
    for plugin in ["quiet", "muted"] {
        for i in 0..3 {
            assert_eq!(
                call(&client, plugin, Value::from(i)).await.expect_value(),
                Value::from(i)
            );
        }
    }
    // The control worker's span and a metric export after it show the receiver works and
    // the others had their chance to export.
    assert_eq!(
        call(&client, "loud", Value::from(1)).await.expect_value(),
        Value::from(1)
    );
    let records = receiver.collect_until(Duration::from_secs(20), |seen| {
        !spans_named(seen, "mofa.exec loud").is_empty()
            && seen
                .iter()
                .filter(|r| r["signal"] == "metric" && r["service"] == "loud")
                .count()
                > 20
    });
    let strangers: Vec<_> = records.iter().filter(|r| r["service"] != "loud").collect();
    assert!(
        strangers.is_empty(),
        "only the control worker exports: {strangers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_one_log_line_and_no_request() {
    // A port nobody listens on.
    let port = free_port();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[("unheard.rhai", "fn execute(input) { input }")]);
    let (worker, logs) = worker_process(
        &server,
        plugins.path(),
        "unheard-worker",
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )],
        &[],
    );
    let client = server.client().await;
    wait_until_listed(&client, "unheard").await;
    // Several export rounds' worth of requests, each answered.
    for round in 0..5 {
        for i in 0..20 {
            assert_eq!(
                call(&client, "unheard", Value::from(i))
                    .await
                    .expect_value(),
                Value::from(i),
                "round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(worker);
    let mut warnings = 0;
    while let Some(line) = logs.try_next_within(Duration::from_secs(2)) {
        if line.contains("not exported (is the collector up?)") {
            warnings += 1;
        }
    }
    assert_eq!(
        warnings, 2,
        "one line for spans, one for metrics, however many exports failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_does_not_hold_up_a_stopping_worker() {
    // Accepts connections (the kernel does, into the backlog) and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = hung.local_addr().expect("address").port();
    let server = NatsServer::start();
    let plugins = plugins_dir(&[("stuck.rhai", "fn execute(input) { input }")]);
    let (mut worker, _logs) = worker_process(
        &server,
        plugins.path(),
        "stuck-worker",
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )],
        &[],
    );
    let client = server.client().await;
    wait_until_listed(&client, "stuck").await;
    for i in 0..20 {
        assert_eq!(
            call(&client, "stuck", Value::from(i)).await.expect_value(),
            Value::from(i)
        );
    }
    // An export is now waiting on the collector (HTTP timeout: 10 s): it has connected, and
    // the connection is held open, unanswered.
    hung.set_nonblocking(true).expect("non-blocking");
    let waiting = Instant::now();
    let _held = loop {
        match hung.accept() {
            Ok((connection, _)) => break connection,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    waiting.elapsed() < Duration::from_secs(20),
                    "no export reached the collector"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let stopped = Instant::now();
    // SAFETY: kill(2) on the pid of a child this test owns.
    unsafe { libc::kill(worker.pid(), libc::SIGTERM) };
    let status = loop {
        if let Some(status) = worker.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "the worker is still stopping after 8 s (telemetry shutdown is capped at {:?})",
            mofa_bus::telemetry::SHUTDOWN_LIMIT
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean drain exits 0: {status:?}");
    drop(hung);
}
