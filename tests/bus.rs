//! The worker on a real nats-server: round trips, the seed scripts, concurrency, queue groups,
//! bad input, no-responders, result events and the Services API.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use mofa_bus::events::ResultEvent;
use mofa_bus::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata};
use mofa_bus::wire::Value;

fn discount_input(price: Value, tier: &str) -> Value {
    map(&[("price", price), ("customer_tier", Value::from(tier))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_and_rhai_round_trips() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();

    let every_type = map(&[
        ("s", Value::from("text")),
        ("i", Value::from(-7)),
        ("u", Value::from(u64::MAX)),
        ("f", Value::F64(2.5)),
        ("b", Value::Boolean(true)),
        ("n", Value::Nil),
        ("bin", Value::Binary(vec![0, 159, 255])),
        ("a", Value::Array(vec![Value::from(1), Value::from("x")])),
    ]);
    assert_eq!(
        call(&client, "echo", every_type.clone())
            .await
            .expect_value(),
        every_type
    );

    for (plugin, price, tier, expected) in [
        ("discount_native", Value::from(100), "gold", 80.0),
        ("discount_native", Value::F64(50.0), "silver", 45.0),
        ("discount_native", Value::from(100), "bronze", 100.0),
        ("discount", Value::from(100), "gold", 80.0),
        ("discount", Value::F64(50.0), "silver", 45.0),
        ("discount", Value::from(100), "bronze", 100.0),
    ] {
        let out = call(&client, plugin, discount_input(price, tier))
            .await
            .expect_value();
        assert_eq!(out, Value::F64(expected), "{plugin} {tier}");
    }
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_or_mistyped_discount_fields_are_400_for_both_kinds() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    for plugin in ["discount_native", "discount"] {
        for input in [
            map(&[("price", Value::from(10))]),
            map(&[("customer_tier", Value::from("gold"))]),
            discount_input(Value::from("ten"), "gold"),
            map(&[
                ("price", Value::from(10)),
                ("customer_tier", Value::from(3)),
            ]),
            Value::from(42),
        ] {
            let reply = call(&client, plugin, input.clone()).await;
            assert_eq!(reply.code(), Some(400), "{plugin} {input}: {reply:?}");
        }
    }
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_pricing_prices_an_order() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();

    let out = call(
        &client,
        "order_pricing",
        map(&[
            ("id", Value::from("A-1")),
            ("quantity", Value::from(12)),
            ("price", Value::F64(10.0)),
        ]),
    )
    .await
    .expect_value();
    assert_eq!(out["order_id"], Value::from("A-1"));
    assert_eq!(out["subtotal"], Value::F64(120.0));
    assert_eq!(out["discount"], Value::F64(6.0));
    assert_eq!(out["shipping"], Value::F64(0.0));
    assert_eq!(out["total"], Value::F64(114.0));
    assert_eq!(out["status"], Value::from("processed"));

    let small = call(
        &client,
        "order_pricing",
        map(&[
            ("id", Value::from(7)),
            ("quantity", Value::from(2)),
            ("price", Value::from(5)),
        ]),
    )
    .await
    .expect_value();
    let total = small["total"].as_f64().expect("total is a float");
    assert!((total - 19.99).abs() < 1e-9, "{total}");

    let bad = call(
        &client,
        "order_pricing",
        map(&[
            ("id", Value::from(7)),
            ("quantity", Value::from(0)),
            ("price", Value::from(5)),
        ]),
    )
    .await;
    assert_eq!(bad.code(), Some(400));
    assert!(bad.message().contains("quantity"), "{bad:?}");
    bus.shutdown().await;
}

/// A native plugin that records how many calls overlap.
struct Overlap {
    meta: PluginMetadata,
    running: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl AgentPlugin for Overlap {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }
    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(input)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_to_one_plugin_run_at_once() {
    let server = NatsServer::start();
    let plugin = Arc::new(Overlap {
        meta: PluginMetadata::new("overlap", PluginKind::Native),
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    let dir = plugins_dir(&[]);
    let worker = worker_with(config(&server, dir.path()), vec![plugin.clone()]).await;
    let client = server.client().await;
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { call(&client, "overlap", Value::from(i)).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.expect("joins").expect_value(), Value::from(i));
    }
    assert!(
        plugin.peak.load(Ordering::SeqCst) >= 16,
        "requests were not handled concurrently: peak {}",
        plugin.peak.load(Ordering::SeqCst)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rhai_requests_all_get_their_own_answer() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                call(
                    &client,
                    "discount",
                    discount_input(Value::from(i * 10), "gold"),
                )
                .await
            })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(
            c.await.expect("joins").expect_value(),
            Value::F64(i as f64 * 10.0 * 0.8)
        );
    }
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_queue_a_saturated_plugin_answers_503_at_once() {
    let server = NatsServer::start();
    let plugin = Arc::new(Overlap {
        meta: PluginMetadata::new("overlap", PluginKind::Native),
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    let dir = plugins_dir(&[]);
    let mut cfg = config(&server, dir.path());
    cfg.max_concurrency = 2;
    cfg.max_queue = 0;
    let worker = worker_with(cfg, vec![plugin.clone()]).await;
    let client = server.client().await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { call(&client, "overlap", Value::from(i)).await })
        })
        .collect();
    let mut ok = 0;
    let mut saturated = 0;
    for c in calls {
        match c.await.expect("joins") {
            Reply::Ok(_) => ok += 1,
            reply => {
                assert_eq!(reply.code(), Some(503), "{reply:?}");
                assert!(reply.message().contains("saturated"), "{reply:?}");
                saturated += 1;
            }
        }
    }
    assert!(ok >= 2, "the permitted requests were served ({ok})");
    assert!(saturated >= 1, "the limit of 2 was never enforced");
    assert!(
        plugin.peak.load(Ordering::SeqCst) <= 2,
        "more than 2 ran at once"
    );
    // Once the burst is over the plugin serves again.
    assert_eq!(
        call(&client, "overlap", Value::from(1))
            .await
            .expect_value(),
        Value::from(1)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_in_one_queue_group_both_serve() {
    let server = NatsServer::start();
    let mut a = config(&server, &repo_plugins());
    a.worker_id = Some("worker-a".into());
    let mut b = a.clone();
    b.worker_id = Some("worker-b".into());
    let wa = worker(a).await;
    let wb = worker(b).await;
    let client = server.client().await;
    let mut events = client
        .subscribe("mofa.events.result.echo")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");

    for i in 0..200 {
        assert_eq!(
            call(&client, "echo", Value::from(i)).await.expect_value(),
            Value::from(i)
        );
    }
    let mut served_by = HashSet::new();
    let mut seen = 0;
    while seen < 200 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event in time")
            .expect("event");
        let event: ResultEvent = rmp_serde::from_slice(&event.payload).expect("event decodes");
        served_by.insert(event.worker.into_owned());
        seen += 1;
    }
    // Each request went to exactly one worker (200 events for 200 requests) and both served.
    assert_eq!(
        served_by,
        HashSet::from(["worker-a".to_string(), "worker-b".to_string()])
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err(),
        "a request was executed twice"
    );
    wa.shutdown().await.expect("drains");
    // One worker gone: the other keeps serving.
    assert_eq!(
        call(&client, "echo", Value::from("x")).await.expect_value(),
        Value::from("x")
    );
    wb.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_msgpack_gets_400_and_worker_survives() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    for (body, what) in [
        (vec![0xc1u8], "reserved byte"),
        (vec![0x92, 0x01], "truncated array"),
        (vec![0x01, 0x02], "two values"),
        (
            vec![0xdb, 0xff, 0xff, 0xff, 0xff],
            "string longer than the body",
        ),
        (vec![0x91; 5000], "nesting bomb"),
    ] {
        for plugin in ["echo", "discount", "discount_native"] {
            let reply = call_raw(
                &client,
                plugin,
                Bytes::from(body.clone()),
                Duration::from_secs(5),
            )
            .await
            .expect("a reply");
            assert_eq!(reply.code(), Some(400), "{plugin} {what}: {reply:?}");
            assert!(reply.message().contains("MessagePack"), "{reply:?}");
        }
    }
    assert_eq!(
        call(&client, "echo", Value::from("alive"))
            .await
            .expect_value(),
        Value::from("alive")
    );
    let out = call(&client, "discount", discount_input(Value::from(10), "gold"))
        .await
        .expect_value();
    assert_eq!(out, Value::F64(8.0));
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_body_is_nil() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let reply = call_raw(&client, "echo", Bytes::new(), Duration::from_secs(5))
        .await
        .expect("a reply");
    assert_eq!(reply, Reply::Ok(Value::Nil));
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_plugin_gets_no_responders() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let err = call_raw(
        &client,
        "no_such_plugin",
        Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .expect_err("nobody serves it");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn result_events_reach_a_subscriber() {
    let bus = TestBus::builder()
        .repo_plugins()
        .config(|c| c.worker_id = Some("events-worker".into()))
        .start()
        .await;
    let client = bus.client.clone();
    let mut events = client
        .subscribe("mofa.events.result.*")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Mofa-Request-Id", "req-42");
    client
        .request_with_headers(
            "mofa.exec.discount",
            headers,
            mofa_bus::wire::encode(&discount_input(Value::from(100), "gold")),
        )
        .await
        .expect("reply");
    let bad = call(&client, "discount_native", Value::from("nope")).await;
    assert_eq!(bad.code(), Some(400));

    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event in time")
            .expect("event");
        let event: ResultEvent = rmp_serde::from_slice(&m.payload).expect("decodes");
        got.push((m.subject.to_string(), event));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let (subject, ok) = &got[0];
    assert_eq!(subject, "mofa.events.result.discount");
    assert_eq!(ok.event, "result");
    assert_eq!(ok.plugin, "discount");
    assert_eq!(ok.kind, "rhai");
    assert_eq!(ok.worker, "events-worker");
    assert_eq!(ok.request_id, "req-42");
    assert!(ok.ok);
    assert_eq!(ok.code, None);
    assert_eq!(ok.output, Some(Value::F64(80.0)));
    assert!(ok.timestamp_ms > 1_700_000_000_000);

    let (subject, failed) = &got[1];
    assert_eq!(subject, "mofa.events.result.discount_native");
    assert!(!failed.ok);
    assert_eq!(failed.kind, "native");
    assert_eq!(failed.code, Some(400));
    assert!(failed.message.as_deref().is_some_and(|m| !m.is_empty()));
    assert!(!failed.request_id.is_empty());
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn result_events_can_leave_out_the_output() {
    let bus = TestBus::builder()
        .repo_plugins()
        .config(|c| c.events.include_output = false)
        .start()
        .await;
    let client = bus.client.clone();
    let mut events = client
        .subscribe("mofa.events.result.echo")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    call(&client, "echo", Value::from("secret"))
        .await
        .expect_value();
    let m = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("in time")
        .expect("event");
    let event: ResultEvent = rmp_serde::from_slice(&m.payload).expect("decodes");
    assert!(event.ok);
    assert_eq!(event.output, None);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_api_ping_info_and_stats_answer() {
    use async_nats::service::{Info, PingResponse, Stats};
    let bus = TestBus::builder()
        .repo_plugins()
        .config(|c| c.worker_id = Some("svc-worker".into()))
        .start()
        .await;
    let client = bus.client.clone();

    for subject in ["$SRV.PING", "$SRV.PING.mofa", "$SRV.PING.mofa.svc-worker"] {
        let reply = client
            .request(subject, Bytes::new())
            .await
            .expect("ping answered");
        let ping: PingResponse = serde_json::from_slice(&reply.payload).expect("ping schema");
        assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
        assert_eq!(ping.name, "mofa");
        assert_eq!(ping.id, "svc-worker");
    }

    let reply = client
        .request("$SRV.INFO.mofa", Bytes::new())
        .await
        .expect("info");
    let info: Info = serde_json::from_slice(&reply.payload).expect("info schema");
    let mut names: Vec<_> = info.endpoints.iter().map(|e| e.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "calculate_discount",
            "content_moderation",
            "data_analyzer",
            "database",
            "discount",
            "discount_as",
            "discount_c",
            "discount_native",
            "discount_wasm",
            "echo",
            "get_weather",
            "hello_wasi",
            "order_pricing",
            "order_processor",
            "wordcount"
        ]
    );
    for e in &info.endpoints {
        assert_eq!(e.subject, format!("mofa.exec.{}", e.name));
        assert_eq!(e.queue_group, "mofa");
    }

    call(&client, "echo", Value::from(1)).await.expect_value();
    call(&client, "echo", Value::from(2)).await.expect_value();
    assert_eq!(
        call(&client, "discount_native", Value::Nil).await.code(),
        Some(400)
    );
    let reply = client
        .request("$SRV.STATS.mofa.svc-worker", Bytes::new())
        .await
        .expect("stats");
    let stats: Stats = serde_json::from_slice(&reply.payload).expect("stats schema");
    assert_eq!(stats.kind, "io.nats.micro.v1.stats_response");
    let echo = stats
        .endpoints
        .iter()
        .find(|e| e.name == "echo")
        .expect("echo stats");
    assert_eq!((echo.requests, echo.errors), (2, 0));
    let native = stats
        .endpoints
        .iter()
        .find(|e| e.name == "discount_native")
        .expect("native stats");
    assert_eq!((native.requests, native.errors), (1, 1));
    assert_eq!(native.last_error.as_ref().map(|e| e.code), Some(400));
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_file_names_and_broken_scripts_are_reported_and_skipped() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[
        ("bad.name.rhai", "fn execute(x) { x }"),
        ("broken.rhai", "fn execute(x) { x +"),
        ("no_entry.rhai", "let a = 1;"),
        ("good.rhai", "fn execute(x) { x * 2 }"),
    ]);
    let worker = worker(config(&server, dir.path())).await;
    let client = server.client().await;
    let mut failed: Vec<String> = worker
        .load_failures()
        .iter()
        .map(|f| {
            f.path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    failed.sort();
    assert_eq!(failed, ["bad.name.rhai", "broken.rhai", "no_entry.rhai"]);
    let no_entry = worker
        .load_failures()
        .iter()
        .find(|f| f.path.ends_with("no_entry.rhai"))
        .expect("reported");
    assert!(no_entry.error.contains("entry point"), "{}", no_entry.error);
    assert_eq!(
        call(&client, "good", Value::from(21)).await.expect_value(),
        Value::from(42)
    );
    let err = call_raw(&client, "broken", Bytes::new(), Duration::from_secs(2))
        .await
        .expect_err("not served");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    worker.shutdown().await.expect("drains");
}

/// A native plugin that takes `millis` to answer.
struct Sleepy {
    meta: PluginMetadata,
    millis: u64,
    /// Notified when a call starts sleeping.
    started: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl AgentPlugin for Sleepy {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }
    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.started.notify_one();
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(input)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_gives_up_after_drain_timeout() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[]);
    let mut cfg = config(&server, dir.path());
    cfg.drain_timeout_ms = 300;
    let started = Arc::new(tokio::sync::Notify::new());
    let sleepy = Arc::new(Sleepy {
        meta: PluginMetadata::new("sleepy", PluginKind::Native),
        millis: 10_000,
        started: started.clone(),
    });
    let worker = worker_with(cfg, vec![sleepy]).await;
    let client = server.client().await;
    let pending = tokio::spawn({
        let client = client.clone();
        async move { call_raw(&client, "sleepy", Bytes::new(), Duration::from_secs(20)).await }
    });
    // The request is running.
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the sleepy request starts");
    let started = std::time::Instant::now();
    let stopped = worker.shutdown().await;
    let took = started.elapsed();
    match stopped {
        Err(mofa_bus::worker::WorkerError::DrainIncomplete {
            unanswered, stage, ..
        }) => {
            assert_eq!(unanswered, 1, "the sleeping request");
            assert_eq!(stage, "answering the requests in flight");
        }
        other => panic!("expected an incomplete drain, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(250),
        "did not wait for the request ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "ignored drain_timeout_ms ({took:?})"
    );
    pending.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn result_events_can_be_turned_off() {
    let bus = TestBus::builder()
        .repo_plugins()
        .config(|c| c.events.results = false)
        .start()
        .await;
    let client = bus.client.clone();
    let mut events = client
        .subscribe("mofa.events.result.>")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    for i in 0..5 {
        call(&client, "echo", Value::from(i)).await.expect_value();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "a result event was published"
    );
    bus.shutdown().await;
}
