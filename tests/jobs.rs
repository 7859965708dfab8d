//! Durable jobs on real nats-servers: nothing lost when a worker is killed or the server
//! restarts, dead letters after `max_deliver` and their replay, deduplication by job id, and
//! each `[jobs]` limit tripped.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use mofa_bus::events::ResultEvent;
use mofa_bus::jobs::{JobResult, JobState, Jobs, JobsConfig};
use mofa_bus::wire::{self, Value};

/// Collects the result events of `plugin` (one per execution) on a task.
struct Executions {
    events: std::sync::Arc<std::sync::Mutex<Vec<ResultEvent<'static>>>>,
}

impl Executions {
    async fn of(client: &async_nats::Client, plugin: &str) -> Executions {
        let mut sub = client
            .subscribe(mofa_bus::subjects::result_event(plugin))
            .await
            .expect("subscribes");
        client.flush().await.expect("flush");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                if let Ok(event) = rmp_serde::from_slice::<ResultEvent>(&message.payload) {
                    sink.lock().expect("lock").push(event);
                }
            }
        });
        Executions { events }
    }

    /// Executions per job id.
    fn per_job(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for event in self.events.lock().expect("lock").iter() {
            *counts.entry(event.request_id.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Executions on worker `id`.
    fn by_worker(&self, id: &str) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.worker == id)
            .count()
    }

    /// The executions of `job` once at least `count` have been seen (or 10 s have passed): a
    /// job's result is stored before its result event reaches this subscriber.
    async fn at_least(&self, job: &str, count: usize) -> Vec<ResultEvent<'static>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.of_job(job);
            if seen.len() >= count || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn of_job(&self, job: &str) -> Vec<ResultEvent<'static>> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.request_id == job)
            .cloned()
            .collect()
    }
}

/// Collects the final results published on `mofa.results.>`.
async fn results(client: &async_nats::Client) -> tokio::sync::mpsc::UnboundedReceiver<JobResult> {
    let mut sub = client
        .subscribe("mofa.results.>")
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            if let Ok(result) = JobResult::decode(&message.payload) {
                if tx.send(result).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Waits until every job in `ids` has a final result on `rx`, or `limit` passes; returns the
/// ones seen.
async fn collect_final(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<JobResult>,
    ids: &HashSet<String>,
    seen: &mut HashMap<String, JobResult>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while ids.iter().any(|id| !seen.contains_key(id)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(result)) if ids.contains(&result.job) => {
                seen.insert(result.job.clone(), result);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
}

/// A nats-server, an in-process worker serving `scripts` (and the native plugins) with its
/// configuration changed by `tweak`, a client, and the jobs handle with the worker's settings.
struct Setup {
    server: NatsServer,
    _plugins: Plugins,
    worker: mofa_bus::worker::Worker,
    client: async_nats::Client,
    jobs: Jobs,
}

async fn setup(
    scripts: &[(&str, &str)],
    tweak: impl FnOnce(&mut mofa_bus::config::WorkerConfig),
) -> Setup {
    let bus = TestBus::builder()
        .scripts(scripts)
        .config(tweak)
        .start()
        .await;
    let jobs = Jobs::open(bus.client.clone(), &bus.config.jobs)
        .await
        .expect("jobs streams");
    Setup {
        server: bus.server,
        _plugins: bus.plugins,
        worker: bus.worker,
        client: bus.client,
        jobs,
    }
}

/// The final state of job `id`, waiting up to 30 s.
async fn finished(jobs: &Jobs, id: &str) -> JobResult {
    jobs.wait(id, Duration::from_secs(30))
        .await
        .expect("waits")
        .unwrap_or_else(|| panic!("no state for job {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_in_the_middle_of_2000_jobs_loses_none() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "work.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.002 { } #{ n: x.n * 2 } }",
    )]);
    let jobs_config = JobsConfig {
        ack_wait_ms: 2_000,
        concurrency: 16,
        ..JobsConfig::default()
    };
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| {
            let file = dir.path().join(format!("w{i}.toml"));
            std::fs::write(
                &file,
                format!("worker_id = \"w{i}\"\n[rhai]\nmax_operations = 0\n[jobs]\nack_wait_ms = 2000\nconcurrency = 16\n"),
            )
            .expect("config written");
            WorkerProcess::spawn(&server, dir.path(), Some(&file))
        })
        .collect();
    let client = server.client().await;
    wait_for_plugin(&client, "work", common::map(&[("n", Value::from(0))])).await;
    let executions = Executions::of(&client, "work").await;
    let mut done = results(&client).await;
    let jobs = Jobs::open(client.clone(), &jobs_config)
        .await
        .expect("jobs stream");

    let ids: HashSet<String> = (0..2000).map(|i| format!("job-{i}")).collect();
    for i in 0..2000 {
        let submitted = jobs
            .submit(
                "work",
                &common::map(&[("n", Value::from(i))]),
                Some(&format!("job-{i}")),
            )
            .await
            .expect("submitted");
        assert!(!submitted.duplicate);
    }
    // Kill one worker while a good share of the jobs is still to run.
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // w0, the one to be killed, is running jobs too.
    while seen.len() < 300 || executions.by_worker("w0") == 0 {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(result)) => {
                seen.insert(result.job.clone(), result);
            }
            _ => panic!("only {} results within 60 s", seen.len()),
        }
    }
    let ran_on_killed = executions.by_worker("w0");
    let killed = workers.remove(0);
    // SAFETY: kill(2) with a pid we spawned and own.
    assert_eq!(unsafe { libc::kill(killed.pid(), libc::SIGKILL) }, 0);
    let at_kill = seen.len();
    drop(killed);
    assert!(at_kill < 2000, "the kill came before the last job");

    collect_final(&mut done, &ids, &mut seen, Duration::from_secs(120)).await;
    // Every job has its result stored, with the right output, and published.
    let mut lost = Vec::new();
    for i in 0..2000 {
        let id = format!("job-{i}");
        match jobs.result(&id).await.expect("reads") {
            Some(r) if r.state == JobState::Done => {
                let n = r
                    .output
                    .as_ref()
                    .and_then(|o| o.as_map())
                    .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("n")))
                    .and_then(|(_, v)| v.as_i64());
                assert_eq!(n, Some(i * 2), "{id}: {:?}", r.output);
            }
            other => lost.push(format!("{id}: {other:?}")),
        }
    }
    let unpublished: Vec<_> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    let per_job = executions.per_job();
    let runs: usize = per_job
        .iter()
        .filter(|(id, _)| ids.contains(*id))
        .map(|(_, n)| n)
        .sum();
    // Jobs the killed worker held and had not finished ran again once ack_wait passed.
    let redelivered = seen.values().filter(|r| r.attempts > 1).count();
    eprintln!(
        "2000 jobs, 3 workers, one SIGKILLed after {at_kill} results ({ran_on_killed} run on it): {} results published, {} lost, {redelivered} finished on a later attempt, {} executions ({} duplicates: run on the killed worker and again)",
        seen.len(),
        lost.len(),
        runs,
        runs.saturating_sub(2000)
    );
    assert!(lost.is_empty(), "lost jobs: {lost:?}");
    assert!(
        unpublished.is_empty(),
        "stored but never published on mofa.results: {unpublished:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_keeps_failing_is_dead_lettered_after_max_deliver_and_can_be_replayed() {
    // Fails its first three runs, then succeeds.
    let Setup {
        server,
        worker,
        client,
        jobs,
        _plugins,
    } = setup(
        &[(
            "flaky.rhai",
            r#"fn execute(x) {
            let n = state_get("n");
            if n == () { n = 0; }
            state_set("n", n + 1);
            if n < 3 { throw "boom " + n; }
            #{ ok: x.v }
        }"#,
        )],
        |config| {
            config.jobs.max_deliver = 3;
            config.jobs.backoff_ms = vec![300, 600];
        },
    )
    .await;
    let executions = Executions::of(&client, "flaky").await;

    jobs.submit(
        "flaky",
        &common::map(&[("v", Value::from(7))]),
        Some("flaky-1"),
    )
    .await
    .expect("submitted");
    let failed = finished(&jobs, "flaky-1").await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.code, Some(500));
    assert!(
        failed.message.as_deref().unwrap_or("").contains("boom 2"),
        "{failed:?}"
    );
    let runs = executions.at_least("flaky-1", 3).await;
    assert_eq!(runs.len(), 3, "max_deliver = 3 attempts");
    // The backoff between attempts: 300 ms, then 600 ms.
    let ends: Vec<u64> = runs.iter().map(|e| e.timestamp_ms).collect();
    assert!(ends[1] - ends[0] >= 300, "{ends:?}");
    assert!(ends[2] - ends[1] >= 600, "{ends:?}");

    // The dead letter, through the CLI a user would use.
    let url = server.url();
    let listed = tokio::task::spawn_blocking({
        let url = url.clone();
        move || mofa(&["dlq", "flaky"], &url)
    })
    .await
    .expect("joins");
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["job"], "flaky-1");
    assert_eq!(lines[0]["attempts"], 3);
    assert_eq!(lines[0]["code"], 500);
    assert_eq!(lines[0]["input"], serde_json::json!({"v": 7}));
    assert_eq!(
        lines[0]["sequence"].as_u64(),
        failed.dead_letter,
        "the record names its dead letter"
    );

    let replayed = tokio::task::spawn_blocking({
        let url = url.clone();
        move || mofa(&["dlq", "flaky", "--replay"], &url)
    })
    .await
    .expect("joins");
    assert!(replayed.status.success(), "{replayed:?}");
    let done = finished(&jobs, "flaky-1").await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.output, Some(common::map(&[("ok", Value::from(7))])));
    assert!(jobs
        .dead_letters(Some("flaky"))
        .await
        .expect("lists")
        .is_empty());
    let shown = tokio::task::spawn_blocking(move || mofa(&["job", "flaky-1"], &url))
        .await
        .expect("joins");
    assert!(shown.status.success(), "{shown:?}");
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["output"], serde_json::json!({"ok": 7}));
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_dead_lettered_at_once_and_a_plain_client_job_is_known_by_its_sequence() {
    let Setup {
        server: _server,
        worker,
        client,
        jobs,
        _plugins,
    } = setup(&[], |_| {}).await;
    let mut done = results(&client).await;
    // A plain JetStream client: no job id header, and a body that is not MessagePack.
    let js = async_nats::jetstream::new(client.clone());
    let ack = js
        .publish("mofa.jobs.echo", bytes::Bytes::from_static(&[0xc1]))
        .await
        .expect("published")
        .await
        .expect("stored");
    let id = ack.sequence.to_string();
    let result = tokio::time::timeout(Duration::from_secs(20), done.recv())
        .await
        .expect("a result in time")
        .expect("a result");
    assert_eq!(result.job, id);
    assert_eq!(result.state, JobState::Failed);
    assert_eq!(result.code, Some(400));
    assert_eq!(result.attempts, 1, "bad input is not retried");
    let letters = jobs.dead_letters(None).await.expect("lists");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].plugin, "echo");
    assert_eq!(letters[0].input, Value::Binary(vec![0xc1]));
    // The worker goes on serving jobs.
    let ok = jobs
        .submit("echo", &Value::from("hi"), None)
        .await
        .expect("submitted");
    let ok = finished(&jobs, &ok.job).await;
    assert_eq!(ok.output, Some(Value::from("hi")));
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resubmitted_job_id_runs_once_within_the_dedup_window_and_again_after_it() {
    let Setup {
        server: _server,
        worker,
        client,
        jobs,
        _plugins,
    } = setup(&[], |config| config.jobs.dedup_window_ms = 3_000).await;
    let executions = Executions::of(&client, "echo").await;

    let first_at = Instant::now();
    let first = jobs
        .submit("echo", &Value::from(1), Some("once"))
        .await
        .expect("submitted");
    assert!(!first.duplicate);
    let again = jobs
        .submit("echo", &Value::from(1), Some("once"))
        .await
        .expect("submitted");
    assert!(again.duplicate, "same id within the window");
    assert_eq!(again.sequence, first.sequence);
    let result = finished(&jobs, "once").await;
    assert_eq!(result.state, JobState::Done);
    // A third submission inside the window, then a marker job: once the marker ran, anything
    // stored before it ran too (one worker, FIFO stream).
    assert!(
        jobs.submit("echo", &Value::from(1), Some("once"))
            .await
            .expect("submitted")
            .duplicate
    );
    let marker = jobs
        .submit("echo", &Value::from(2), Some("marker-1"))
        .await
        .expect("submitted");
    finished(&jobs, &marker.job).await;
    assert!(
        first_at.elapsed() < Duration::from_millis(3_000),
        "still inside the window"
    );
    // Events arrive in the order they were published: the marker's comes after any of "once".
    executions.at_least(&marker.job, 1).await;
    assert_eq!(executions.of_job("once").len(), 1, "run once");

    // Past the window the same id is a new job.
    tokio::time::sleep(Duration::from_millis(3_100).saturating_sub(first_at.elapsed())).await;
    let later = jobs
        .submit("echo", &Value::from(1), Some("once"))
        .await
        .expect("submitted");
    assert!(!later.duplicate, "dedup_window_ms = 3000 has passed");
    let marker = jobs
        .submit("echo", &Value::from(2), Some("marker-2"))
        .await
        .expect("submitted");
    finished(&jobs, &marker.job).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while executions.of_job("once").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        executions.of_job("once").len(),
        2,
        "run again after the window"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_concurrency_bounds_jobs_in_flight_and_a_long_job_outlives_ack_wait_once() {
    let Setup {
        server: _server,
        worker,
        client,
        jobs,
        _plugins,
    } = setup(
        &[(
            "slow.rhai",
            "fn execute(x) { let t = timestamp(); while t.elapsed < x.s { } x.i }",
        )],
        |config| {
            config.jobs.concurrency = 2;
            config.jobs.ack_wait_ms = 600;
            config.rhai.max_operations = 0;
            config.rhai.timeout_ms = 10_000;
        },
    )
    .await;
    let executions = Executions::of(&client, "slow").await;

    let mut ids = Vec::new();
    for i in 0..6 {
        let input = common::map(&[("s", Value::from(0.25)), ("i", Value::from(i))]);
        ids.push(
            jobs.submit("slow", &input, None)
                .await
                .expect("submitted")
                .job,
        );
    }
    // Longer than ack_wait_ms: the progress signal keeps it from being delivered twice.
    let long = jobs
        .submit(
            "slow",
            &common::map(&[("s", Value::from(1.5)), ("i", Value::from(99))]),
            Some("long"),
        )
        .await
        .expect("submitted");
    for id in ids.iter().chain(std::iter::once(&long.job)) {
        let result = finished(&jobs, id).await;
        assert_eq!(result.state, JobState::Done, "{result:?}");
    }
    for id in ids.iter().chain(std::iter::once(&long.job)) {
        executions.at_least(id, 1).await;
    }
    // Intervals of execution: never more than two at once, and two at some point.
    // An event's end is its `timestamp_ms` (whole milliseconds, taken after the execution), so
    // each interval is known to a few milliseconds: a job that takes the permit the moment
    // another frees it may appear to overlap it by that much. Overlaps that short do not count;
    // a third job at once would overlap the others by most of its 250 ms.
    const SLACK_US: u64 = 5_000;
    let events: Vec<_> = ids.iter().flat_map(|id| executions.of_job(id)).collect();
    assert_eq!(events.len(), 6);
    let spans: Vec<(u64, u64)> = events
        .iter()
        .map(|e| (e.timestamp_ms * 1000 - e.duration_us, e.timestamp_ms * 1000))
        .collect();
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start + SLACK_US < *e)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most <= 2,
        "jobs.concurrency = 2, saw {most} at once: {spans:?}"
    );
    assert_eq!(most, 2, "two ran at once: {spans:?}");
    assert_eq!(
        executions.of_job("long").len(),
        1,
        "ran once despite ack_wait_ms = 600"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_a_nats_server_restart() {
    let Setup {
        mut server,
        worker,
        client,
        jobs,
        _plugins,
    } = setup(
        &[(
            "work.rhai",
            "fn execute(x) { let t = timestamp(); while t.elapsed < 0.005 { } x }",
        )],
        |config| {
            config.jobs.ack_wait_ms = 2_000;
            config.jobs.concurrency = 4;
        },
    )
    .await;
    let mut done = results(&client).await;
    let ids: HashSet<String> = (0..300).map(|i| format!("r-{i}")).collect();
    for i in 0..300 {
        jobs.submit("work", &Value::from(i), Some(&format!("r-{i}")))
            .await
            .expect("submitted");
    }
    let mut seen = HashMap::new();
    while seen.len() < 30 {
        let result = tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .expect("results come")
            .expect("result");
        seen.insert(result.job.clone(), result);
    }
    let before = seen.len();
    tokio::task::block_in_place(|| server.restart(Duration::from_millis(500)));
    // Results published while the subscription was reconnecting are read from the bucket.
    collect_final(&mut done, &ids, &mut seen, Duration::from_secs(90)).await;
    let mut missing = Vec::new();
    for id in &ids {
        if seen.contains_key(id) {
            continue;
        }
        match jobs.wait(id, Duration::from_secs(5)).await {
            Ok(Some(r)) if r.state == JobState::Done => {}
            other => missing.push(format!("{id}: {other:?}")),
        }
    }
    eprintln!(
        "300 jobs, server restarted after {before} results: {} missing",
        missing.len()
    );
    assert!(missing.is_empty(), "lost across the restart: {missing:?}");
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_expire_after_result_ttl_and_submit_wait_prints_the_result() {
    let Setup {
        server,
        worker,
        client: _,
        jobs,
        _plugins,
    } = setup(&[], |config| config.jobs.result_ttl_s = 1).await;
    let url = server.url();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            mofa(
                &[
                    "submit",
                    "echo",
                    r#"{"a": [1, 2]}"#,
                    "--id",
                    "ttl-1",
                    "--wait",
                ],
                &url,
            )
        }
    })
    .await
    .expect("joins");
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["state"], "done");
    assert_eq!(printed["output"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(printed["job"], "ttl-1");
    // A bad id is refused before anything is stored.
    let bad = tokio::task::spawn_blocking({
        let url = url.clone();
        move || mofa(&["submit", "echo", "--id", "a.b"], &url)
    })
    .await
    .expect("joins");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid job id"));
    // A job of a plugin no worker serves is stored, with a warning saying it waits.
    let waiting = tokio::task::spawn_blocking({
        let url = url.clone();
        move || mofa(&["submit", "nobody_serves_this", "1"], &url)
    })
    .await
    .expect("joins");
    assert!(waiting.status.success(), "{waiting:?}");
    assert!(
        String::from_utf8_lossy(&waiting.stderr).contains("no worker has consumed jobs of plugin"),
        "{waiting:?}"
    );
    // result_ttl_s = 1: the result is gone a little later.
    let deadline = Instant::now() + Duration::from_secs(15);
    while jobs.result("ttl-1").await.expect("reads").is_some() {
        assert!(Instant::now() < deadline, "result still stored after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = tokio::task::spawn_blocking(move || mofa(&["job", "ttl-1"], &url))
        .await
        .expect("joins");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    worker.shutdown().await.expect("drains");
}

/// The encoded form a plain client would read from the results bucket is a MessagePack map.
#[test]
fn a_job_record_is_a_named_messagepack_map() {
    let record = JobResult::queued("j", "p");
    let value = wire::decode(&record.encode().expect("encodes")).expect("decodes");
    let map = value.as_map().expect("a map");
    let keys: Vec<_> = map.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"job") && keys.contains(&"state") && keys.contains(&"attempts"));
}
