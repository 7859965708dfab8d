//! Hot reload over the bus with three workers on a real nats-server with JetStream: every
//! worker converges on a published revision, a broken revision never serves, late workers
//! catch up, no request fails during reloads, rollback, `mofa watch` and delete.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use mofa_bus::config::{ReloadConfig, WorkerConfig};
use mofa_bus::distribution::{Distribution, PluginRecord, ReloadEvent, ReloadStatus, INLINE_LIMIT};
use mofa_bus::wire::Value;
use mofa_bus::worker::Worker;

fn script(version: u32) -> String {
    format!("fn execute(x) {{ #{{ version: {version}, input: x }} }}\n")
}

async fn workers(server: &NatsServer, dir: &Path, names: &[&str]) -> Vec<Worker> {
    let mut out = Vec::new();
    for name in names {
        let mut cfg = config(server, dir);
        cfg.worker_id = Some(name.to_string());
        out.push(worker(cfg).await);
    }
    out
}

async fn publish_script(dist: &Distribution, dir: &Path, name: &str, source: &str) -> u64 {
    let path = dir.join(format!("{name}.rhai"));
    std::fs::write(&path, source).expect("script written");
    dist.publish_file(&path, None, INLINE_LIMIT)
        .await
        .expect("published")
        .1
}

/// Waits until every worker serves `revision` of `plugin`.
async fn converge(workers: &[Worker], plugin: &str, revision: u64) -> Duration {
    let started = Instant::now();
    loop {
        if workers
            .iter()
            .all(|w| w.serving_revision(plugin) == Some(revision))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "workers did not converge on {plugin} revision {revision}: {:?}",
            workers
                .iter()
                .map(|w| w.serving_revision(plugin))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn version_of(client: &async_nats::Client, plugin: &str) -> (Value, Option<String>) {
    let reply = client
        .request(
            format!("mofa.exec.{plugin}"),
            mofa_bus::wire::encode(&Value::Nil),
        )
        .await
        .expect("reply");
    assert!(
        reply
            .headers
            .as_ref()
            .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none()),
        "error reply: {:?}",
        reply.headers
    );
    let revision = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Mofa-Revision"))
        .map(|v| v.as_str().to_string());
    let value = mofa_bus::wire::decode(&reply.payload).expect("MessagePack");
    (value["version"].clone(), revision)
}

async fn next_reload(events: &mut async_nats::Subscriber) -> ReloadEvent {
    let m = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("reload event in time")
        .expect("event");
    rmp_serde::from_slice(&m.payload).expect("reload event decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_converge_reject_broken_revisions_and_catch_up_late() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let fleet = workers(&server, empty.path(), &["w1", "w2", "w3"]).await;
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let mut events = client
        .subscribe("mofa.events.reload.greet")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");

    // v1 everywhere.
    let v1 = publish_script(&dist, sources.path(), "greet", &script(1)).await;
    converge(&fleet, "greet", v1).await;
    for _ in 0..10 {
        let (version, revision) = version_of(&client, "greet").await;
        assert_eq!(version, Value::from(1));
        assert_eq!(
            revision,
            Some(v1.to_string()),
            "replies name the revision that answered"
        );
    }

    // v2 everywhere, within a bounded time.
    let v2 = publish_script(&dist, sources.path(), "greet", &script(2)).await;
    let took = converge(&fleet, "greet", v2).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(version_of(&client, "greet").await.0, Value::from(2));

    // A broken v3: everyone keeps serving v2 and says so.
    while tokio::time::timeout(Duration::from_millis(200), events.next())
        .await
        .is_ok()
    {}
    let v3 = publish_script(&dist, sources.path(), "greet", "fn execute(x) { x +").await;
    let mut failed = HashSet::new();
    let mut kept = HashSet::new();
    while failed.len() < 3 || kept.len() < 3 {
        let event = next_reload(&mut events).await;
        match event.status {
            ReloadStatus::Failed => {
                assert_eq!(event.revision, v3);
                assert!(
                    event
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains("incomplete")),
                    "{event:?}"
                );
                failed.insert(event.worker);
            }
            ReloadStatus::RolledBack => {
                assert_eq!(event.revision, v2, "the previous revision keeps serving");
                kept.insert(event.worker);
            }
            ReloadStatus::Started => assert_eq!(event.revision, v3),
            other => panic!("unexpected {other:?}: {event:?}"),
        }
    }
    assert_eq!(failed.len(), 3);
    for w in &fleet {
        assert_eq!(w.serving_revision("greet"), Some(v2));
    }
    for _ in 0..10 {
        assert_eq!(
            version_of(&client, "greet").await,
            (Value::from(2), Some(v2.to_string()))
        );
    }

    // A worker started now serves v2 as soon as it is ready.
    let mut cfg = config(&server, empty.path());
    cfg.worker_id = Some("late".into());
    let late = worker(cfg).await;
    assert_eq!(late.serving_revision("greet"), Some(v2));

    // Rollback to v1.
    let (v4, from) = dist.rollback("greet", Some(v1)).await.expect("rollback");
    assert_eq!(from, v1);
    let mut all: Vec<Worker> = fleet;
    all.push(late);
    converge(&all, "greet", v4).await;
    assert_eq!(version_of(&client, "greet").await.0, Value::from(1));
    // And forward again to v2 by naming it (the revision just before v4 is the broken v3).
    let (v5, _) = dist.rollback("greet", Some(v2)).await.expect("rollback");
    converge(&all, "greet", v5).await;
    assert_eq!(version_of(&client, "greet").await.0, Value::from(2));

    // Delete: the endpoint goes away everywhere.
    while tokio::time::timeout(Duration::from_millis(200), events.next())
        .await
        .is_ok()
    {}
    dist.remove("greet").await.expect("removed");
    let mut removed = HashSet::new();
    while removed.len() < 4 {
        let event = next_reload(&mut events).await;
        assert_eq!(event.status, ReloadStatus::Removed, "{event:?}");
        removed.insert(event.worker);
    }
    let err = call_raw(
        &client,
        "greet",
        bytes::Bytes::new(),
        Duration::from_secs(2),
    )
    .await
    .expect_err("nobody serves it");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    // A new key adds an endpoint everywhere.
    let v6 = publish_script(&dist, sources.path(), "greet", &script(6)).await;
    converge(&all, "greet", v6).await;
    assert_eq!(
        version_of(&client, "greet").await,
        (Value::from(6), Some(v6.to_string()))
    );
    for w in all {
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_during_five_reloads() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let fleet = workers(&server, empty.path(), &["r1", "r2", "r3"]).await;
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let first = publish_script(&dist, sources.path(), "live", &script(1)).await;
    converge(&fleet, "live", first).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    match call_raw(
                        &client,
                        "live",
                        mofa_bus::wire::encode(&Value::Nil),
                        Duration::from_secs(5),
                    )
                    .await
                    {
                        Ok(Reply::Ok(v)) => {
                            let version = v["version"].as_u64().unwrap_or(0);
                            answered.fetch_add(1, Ordering::Relaxed);
                            last = last.max(version);
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (failures, last)
            })
        })
        .collect();
    for version in 2..=6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let revision = publish_script(&dist, sources.path(), "live", &script(version)).await;
        converge(&fleet, "live", revision).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut newest = 0;
    for l in loops {
        let (failures, last) = l.await.expect("joins");
        assert!(
            failures.is_empty(),
            "requests failed during reloads: {failures:?}"
        );
        newest = newest.max(last);
    }
    assert_eq!(newest, 6, "the last revision served");
    assert!(
        answered.load(Ordering::Relaxed) > 100,
        "too few requests to mean anything"
    );
    for w in fleet {
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_modules_travel_inline_or_through_the_object_store() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let fleet = workers(&server, empty.path(), &["o1", "o2"]).await;
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let module = repo_plugins().join("discount_wasm.wasm");
    let (_, inline) = dist
        .publish_file(&module, Some("inline"), INLINE_LIMIT)
        .await
        .expect("inline");
    converge(&fleet, "discount_wasm", inline).await;
    let (_, record) = dist
        .current("discount_wasm")
        .await
        .expect("read")
        .expect("stored");
    assert!(record.module.is_some() && record.object.is_none());
    // Force the object-store path.
    let (_, via_object) = dist
        .publish_file(&module, Some("object"), 0)
        .await
        .expect("object");
    converge(&fleet, "discount_wasm", via_object).await;
    let (_, record) = dist
        .current("discount_wasm")
        .await
        .expect("read")
        .expect("stored");
    assert!(record.module.is_none() && record.object.as_deref() == Some(record.sha256.as_str()));
    let input = map(&[
        ("price", Value::from(10)),
        ("customer_tier", Value::from("gold")),
    ]);
    assert_eq!(
        call(&client, "discount_wasm", input).await.expect_value(),
        Value::F64(8.0)
    );
    for w in fleet {
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rhai_state_survives_a_reload_only_when_configured() {
    let counter = |step: i64| {
        format!("fn execute(x) {{ let n = state_get(\"n\"); if n == () {{ n = 0; }} n += {step}; state_set(\"n\", n); n }}")
    };
    for (preserve, expected) in [(true, 12), (false, 10)] {
        let server = NatsServer::start();
        let empty = plugins_dir(&[]);
        let sources = plugins_dir(&[]);
        let mut cfg: WorkerConfig = config(&server, empty.path());
        cfg.reload.preserve_state = preserve;
        let w = worker(cfg).await;
        let client = server.client().await;
        let dist = Distribution::open(client.clone(), &ReloadConfig::default())
            .await
            .expect("buckets");
        let r1 = publish_script(&dist, sources.path(), "count", &counter(1)).await;
        converge(std::slice::from_ref(&w), "count", r1).await;
        assert_eq!(
            call(&client, "count", Value::Nil).await.expect_value(),
            Value::from(1)
        );
        assert_eq!(
            call(&client, "count", Value::Nil).await.expect_value(),
            Value::from(2)
        );
        let r2 = publish_script(&dist, sources.path(), "count", &counter(10)).await;
        converge(std::slice::from_ref(&w), "count", r2).await;
        assert_eq!(
            call(&client, "count", Value::Nil).await.expect_value(),
            Value::from(expected),
            "preserve_state = {preserve}"
        );
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mofa_watch_publishes_each_burst_of_writes_once_with_the_last_write() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("edited.rhai", &script(0))]);
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["watch", "--debounce", "400ms", "--nats", &server.url()])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mofa watch starts");
    // The initial publish of what is on disk.
    let started = Instant::now();
    while dist.current("edited").await.expect("read").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "initial publish missing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = dir.path().join("edited.rhai");
    for burst in 1..=2u32 {
        for write in 1..=8u32 {
            std::fs::write(&path, script(burst * 100 + write)).expect("write");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let history = dist.history("edited").await.expect("history");
    let sources: Vec<String> = history
        .iter()
        .filter_map(|(_, r)| r.record().and_then(|r| r.source.clone()))
        .collect();
    assert_eq!(
        sources,
        [script(0), script(108), script(208)],
        "one publish for the file at start, then one per burst, each the burst's last write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_come_back_after_the_server_restarts_and_keep_following_the_bucket() {
    let mut server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let fleet = workers(&server, empty.path(), &["s1", "s2"]).await;
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let r1 = publish_script(&dist, sources.path(), "sturdy", &script(1)).await;
    converge(&fleet, "sturdy", r1).await;

    server.restart(Duration::from_millis(300));

    // Native plugins and the published script answer again once the clients reconnect.
    let started = Instant::now();
    loop {
        let echo = call_raw(
            &client,
            "echo",
            mofa_bus::wire::encode(&Value::from(1)),
            Duration::from_millis(500),
        )
        .await;
        let script = call_raw(
            &client,
            "sturdy",
            mofa_bus::wire::encode(&Value::Nil),
            Duration::from_millis(500),
        )
        .await;
        if matches!(echo, Ok(Reply::Ok(_))) && matches!(script, Ok(Reply::Ok(_))) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "workers did not come back: {echo:?} {script:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And they still follow the bucket.
    let started = Instant::now();
    let r2 = loop {
        match dist
            .publish_file(
                &{
                    let path = sources.path().join("sturdy.rhai");
                    std::fs::write(&path, script(2)).expect("write");
                    path
                },
                None,
                INLINE_LIMIT,
            )
            .await
        {
            Ok((_, revision)) => break revision,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "publish after restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    converge(&fleet, "sturdy", r2).await;
    assert_eq!(version_of(&client, "sturdy").await.0, Value::from(2));
    for w in fleet {
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_that_cannot_be_fetched_is_retried_max_attempts_times() {
    use mofa_bus::distribution::PluginRecord;
    use mofa_bus::plugin::PluginKind;
    for (attempts, backoff_ms) in [(1u32, 150u64), (3, 150)] {
        let server = NatsServer::start();
        let empty = plugins_dir(&[]);
        let mut cfg = config(&server, empty.path());
        cfg.reload.max_attempts = attempts;
        cfg.reload.retry_backoff_ms = backoff_ms;
        let w = worker(cfg).await;
        let client = server.client().await;
        let dist = Distribution::open(client.clone(), &ReloadConfig::default())
            .await
            .expect("buckets");
        let mut events = client
            .subscribe("mofa.events.reload.ghost")
            .await
            .expect("subscribes");
        client.flush().await.expect("flush");
        let record = PluginRecord {
            kind: PluginKind::Wasm,
            source: None,
            module: None,
            object: Some("no-such-object".into()),
            manifest: None,
            sha256: "0".repeat(64),
            version: "ghost".into(),
            publisher: "test".into(),
            published_ms: 0,
            rollback_of: None,
            signer: None,
            signature: None,
            canary: None,
            tests: None,
            promoted_from: None,
        };
        dist.put("ghost", &record).await.expect("put");
        let failed = loop {
            let event = next_reload(&mut events).await;
            if event.status == ReloadStatus::Failed {
                break event;
            }
        };
        let took = Duration::from_micros(failed.duration_us.unwrap_or(0));
        // Attempts n wait backoff, 2 x backoff, ... between them.
        let waited: u64 = (0..attempts.saturating_sub(1))
            .map(|i| backoff_ms << i)
            .sum();
        assert!(
            took >= Duration::from_millis(waited),
            "{attempts} attempts took {took:?}"
        );
        assert!(
            took < Duration::from_millis(waited + 2_000),
            "{attempts} attempts took {took:?}"
        );
        assert!(
            failed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no-such-object")),
            "{failed:?}"
        );
        assert_eq!(w.serving_revision("ghost"), None);
        w.shutdown().await.expect("drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bucket_keeps_the_configured_history() {
    let server = NatsServer::start();
    let client = server.client().await;
    let config = ReloadConfig {
        history: 3,
        ..ReloadConfig::default()
    };
    let dist = Distribution::open(client.clone(), &config)
        .await
        .expect("buckets");
    let sources = plugins_dir(&[]);
    for v in 1..=5 {
        publish_script(&dist, sources.path(), "kept", &script(v)).await;
    }
    let history = dist.history("kept").await.expect("history");
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(
        history
            .last()
            .and_then(|(_, r)| r.record())
            .and_then(|r| r.source.clone()),
        Some(script(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mofa_watch_follows_the_kinds_subdirectories_and_keys_tools_by_name() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[]);
    for sub in ["rules", "tools"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("subdirectory");
    }
    std::fs::write(
        dir.path().join("rules/gate.rhai"),
        r#"let rules = [ #{ name: "all", priority: "low", condition: |m| true, action: |m| #{} } ];"#,
    )
    .expect("rule set");
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["watch", "--debounce", "100ms", "--nats", &server.url()])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mofa watch starts");
    let appears = |key: &'static str| {
        let dist = dist.clone();
        async move {
            let started = Instant::now();
            while dist.current(key).await.expect("read").is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{key} never published"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    appears("gate").await;
    std::fs::write(
        dir.path().join("tools/weather2.rhai"),
        r#"let tool = #{ name: "forecast", description: "Forecast", parameters: #{ type: "object" } };
           fn execute(args) { "rain" }"#,
    )
    .expect("tool");
    appears("forecast").await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        dist.current("weather2").await.expect("read").is_none(),
        "a tool is keyed by its tool name, not its file name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_plugin_lets_the_requests_it_took_finish() {
    let server = NatsServer::start();
    let empty = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(&server, empty.path());
    cfg.max_concurrency = 2;
    cfg.rhai.max_operations = 0;
    cfg.rhai.timeout_ms = 10_000;
    let worker = worker(cfg).await;
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    let revision = publish_script(
        &dist,
        sources.path(),
        "slowish",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.1 { } x }",
    )
    .await;
    converge(std::slice::from_ref(&worker), "slowish", revision).await;
    // Two run, eight wait in the queue; then the plugin is deleted from the bucket.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                call_raw(
                    &client,
                    "slowish",
                    mofa_bus::wire::encode(&Value::from(i)),
                    Duration::from_secs(20),
                )
                .await
            })
        })
        .collect();
    // Wait until the worker holds them all: two running, eight in the queue.
    wait_until_queued(&client, "slowish", 8).await;
    dist.remove("slowish").await.expect("removed");
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await.expect("joins").expect("a reply");
        assert_eq!(reply, Reply::Ok(Value::from(i)), "request {i}");
    }
}

/// A client of `server` and the plugins bucket on it.
async fn bucket(server: &NatsServer) -> (async_nats::Client, Distribution) {
    let client = server.client().await;
    let dist = Distribution::open(client.clone(), &ReloadConfig::default())
        .await
        .expect("buckets");
    (client, dist)
}

/// The record `mofa publish` would write for script `source`.
async fn record_of(dist: &Distribution, dir: &Path, name: &str, source: &str) -> PluginRecord {
    publish_script(dist, dir, name, source).await;
    dist.current(name)
        .await
        .expect("read")
        .expect("published")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rhai_records_are_checked_against_their_sha256() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let w = worker(config(&server, empty.path())).await;
    let (client, dist) = bucket(&server).await;
    let mut events = client
        .subscribe("mofa.events.reload.checked")
        .await
        .expect("subscribe");
    let good = publish_script(&dist, sources.path(), "checked", &script(1)).await;
    converge(std::slice::from_ref(&w), "checked", good).await;
    let other = record_of(&dist, sources.path(), "scratch", &script(2)).await;
    for sha256 in [other.sha256.clone(), "not-a-sha".to_string()] {
        let mut forged = other.clone();
        forged.source = Some(script(3));
        forged.sha256 = sha256.clone();
        let revision = dist.put("checked", &forged).await.expect("put");
        let failed = loop {
            let event = next_reload(&mut events).await;
            if event.revision == revision && event.status == ReloadStatus::Failed {
                break event;
            }
        };
        let error = failed.error.unwrap_or_default();
        assert!(error.contains("does not match the record's"), "{error}");
        assert_eq!(
            w.serving_revision("checked"),
            Some(good),
            "v1 keeps serving"
        );
        assert_eq!(version_of(&client, "checked").await.0, Value::from(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_worker_skips_unreadable_revisions_to_the_newest_good_one() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let (client, dist) = bucket(&server).await;
    let kv = async_nats::jetstream::new(client.clone())
        .get_key_value("mofa_plugins")
        .await
        .expect("bucket");
    kv.put(
        "late",
        bytes::Bytes::from_static(b"\xc1 random bytes, not a record"),
    )
    .await
    .expect("garbage written");
    let good = publish_script(&dist, sources.path(), "late", &script(7)).await;
    kv.put("late", bytes::Bytes::from_static(b"\x93 more garbage"))
        .await
        .expect("garbage written");
    publish_script(&dist, sources.path(), "late", "fn execute(x) { ").await;
    // A key that is not a plugin name is reported on the reload events too.
    let mut events = client
        .subscribe("mofa.events.reload.>")
        .await
        .expect("subscribe");
    kv.put("not.a.plugin", bytes::Bytes::from_static(b"x"))
        .await
        .expect("written");

    let w = worker(config(&server, empty.path())).await;
    converge(std::slice::from_ref(&w), "late", good).await;
    assert_eq!(version_of(&client, "late").await.0, Value::from(7));
    let reported = loop {
        let event = next_reload(&mut events).await;
        if event.plugin == "not.a.plugin" {
            break event;
        }
    };
    assert_eq!(reported.status, ReloadStatus::Failed);
    assert!(reported
        .error
        .unwrap_or_default()
        .contains("is not a plugin name"),);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starting_worker_answers_the_services_api_only_once_it_serves_the_bucket() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    let (client, dist) = bucket(&server).await;
    let names = ["synced_a", "synced_b", "synced_c", "synced_d"];
    for (i, name) in names.iter().enumerate() {
        publish_script(&dist, sources.path(), name, &script(i as u32)).await;
    }
    let starting = tokio::spawn(worker(config(&server, empty.path())));
    let started = Instant::now();
    let info = loop {
        let asked = client.request("$SRV.INFO.mofa", bytes::Bytes::new()).await;
        if let Ok(reply) = asked {
            break serde_json::from_slice::<serde_json::Value>(&reply.payload).expect("JSON");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no INFO answer"
        );
    };
    let served: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in names {
        assert!(
            served.contains(&name),
            "the first INFO lists {name}: {served:?}"
        );
    }
    let _worker = starting.await.expect("joins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_trusted_keys_only_signed_untampered_revisions_load() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let sources = plugins_dir(&[]);
    // A publisher's key pair, made with the CLI.
    let seed_file = sources.path().join("publisher.nk");
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["keygen", "--out"])
        .arg(&seed_file)
        .output()
        .expect("mofa keygen");
    assert!(keygen.status.success());
    let public = String::from_utf8_lossy(&keygen.stdout)
        .trim()
        .strip_prefix("public key: ")
        .expect("the public key is printed")
        .to_string();
    let mut cfg = config(&server, empty.path());
    cfg.reload.trusted_keys = vec![public];
    let w = worker(cfg).await;
    let (client, dist) = bucket(&server).await;
    let mut events = client
        .subscribe("mofa.events.reload.signed")
        .await
        .expect("subscribe");

    // Signed by the trusted key: served.
    let file = sources.path().join("signed.rhai");
    std::fs::write(&file, script(1)).expect("written");
    let published = mofa(
        &[
            "publish",
            file.to_str().expect("utf-8"),
            "--sign",
            seed_file.to_str().expect("utf-8"),
        ],
        &server.url(),
    );
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let (good, record) = dist
        .current("signed")
        .await
        .expect("read")
        .expect("published");
    converge(std::slice::from_ref(&w), "signed", good).await;
    assert_eq!(version_of(&client, "signed").await.0, Value::from(1));

    // Unsigned, signed by a stranger, and tampered: each rejected, v1 keeps serving.
    let unsigned = record_of(&dist, sources.path(), "scratch", &script(2)).await;
    let mut stranger = unsigned.clone();
    mofa_bus::distribution::signature::sign("signed", &mut stranger, &nkeys::KeyPair::new_user())
        .expect("signed");
    let mut tampered = record.clone();
    tampered.source = unsigned.source.clone();
    tampered.sha256 = unsigned.sha256.clone();
    for (forged, reason) in [
        (unsigned, "unsigned"),
        (stranger, "not in reload.trusted_keys"),
        (tampered, "does not match the record"),
    ] {
        let revision = dist.put("signed", &forged).await.expect("put");
        let failed = loop {
            let event = next_reload(&mut events).await;
            if event.revision == revision && event.status == ReloadStatus::Failed {
                break event;
            }
        };
        let error = failed.error.unwrap_or_default();
        assert!(error.contains(reason), "{reason}: {error}");
        assert_eq!(w.serving_revision("signed"), Some(good));
        assert_eq!(version_of(&client, "signed").await.0, Value::from(1));
    }
    // A rollback republishes the signed revision with its signature: it loads.
    let (back, _) = dist.rollback("signed", Some(good)).await.expect("rollback");
    converge(std::slice::from_ref(&w), "signed", back).await;
}
