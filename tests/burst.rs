//! Bursts on a real nats-server: requests beyond `max_concurrency` wait in the plugin's bounded
//! queue instead of being refused; what cannot start in time, or finds the queue full, gets a
//! 503; a caller that states its deadline (`Mofa-Deadline`) is waited for until then, and one
//! whose deadline has passed is not run (408); every request gets a reply; memory stays
//! bounded.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use mofa_bus::wire::{self, Value};

const DISCOUNT: &str = r#"
fn execute(input) {
    if input.customer_tier == "gold" { input.price * 0.8 } else { input.price }
}"#;

/// What a burst got back: ok replies, error replies by code, and requests with no reply.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    codes: std::collections::BTreeMap<u16, usize>,
    no_reply: usize,
}

/// Sends `n` requests to `plugin` at once and waits for every reply (up to `timeout` each).
async fn burst(
    client: &async_nats::Client,
    plugin: &str,
    body: Value,
    n: usize,
    timeout: Duration,
) -> Tally {
    burst_with(client, plugin, body, n, timeout, false).await
}

/// [`burst`], each request saying (`Mofa-Deadline`) that its caller waits `timeout` when
/// `deadline` is set.
async fn burst_with(
    client: &async_nats::Client,
    plugin: &str,
    body: Value,
    n: usize,
    timeout: Duration,
    deadline: bool,
) -> Tally {
    let body = wire::encode(&body);
    let headers = || {
        let mut headers = async_nats::HeaderMap::new();
        if deadline {
            let at = wire::unix_ms() + timeout.as_millis() as u64;
            headers.insert(wire::HEADER_DEADLINE, at.to_string().as_str());
        }
        headers
    };
    let replies = join_all(
        (0..n).map(|_| call_with_headers(client, plugin, body.clone(), timeout, headers())),
    )
    .await;
    let mut tally = Tally::default();
    for reply in replies {
        match reply {
            Ok(Reply::Ok(_)) => tally.ok += 1,
            Ok(Reply::Err { code, .. }) => *tally.codes.entry(code).or_default() += 1,
            Err(_) => tally.no_reply += 1,
        }
    }
    tally
}

fn order() -> Value {
    map(&[
        ("price", Value::from(100)),
        ("customer_tier", Value::from("gold")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_20000_cheap_requests_is_absorbed() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("discount.rhai", DISCOUNT)]);
    let mut cfg = config(&server, dir.path());
    // A request must start within half its plugin's timeout: with the default 1 s, the last of
    // 20,000 calls in a debug build on a busy 2-core machine can miss those 500 ms. This test
    // is about the queue absorbing the burst; the start-by limit has its own test below.
    cfg.rhai.timeout_ms = 10_000;
    let _worker = worker(cfg).await;
    let client = server.client().await;
    wait_for_plugin(&client, "discount", order()).await;
    let tally = burst(
        &client,
        "discount",
        order(),
        20_000,
        Duration::from_secs(30),
    )
    .await;
    eprintln!("{tally:?}");
    assert_eq!(tally.no_reply, 0, "{tally:?}");
    assert!(tally.ok >= 19_800, "at least 99% ok: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_to_a_slow_plugin_gets_ok_until_the_wait_runs_out_then_503_never_silence() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "slow.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.02 { } x }",
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.queue_wait_ms = 500;
    cfg.rhai.max_operations = 0;
    cfg.rhai.timeout_ms = 5_000;
    cfg.sandbox_threads = 4;
    let worker = worker(cfg).await;
    let client = server.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;
    let tally = burst(&client, "slow", Value::Nil, 1_000, Duration::from_secs(30)).await;
    eprintln!("{tally:?}");
    assert_eq!(tally.no_reply, 0, "{tally:?}");
    // 4 threads x 20 ms for 500 ms: about 100 can start in time.
    assert!(tally.ok >= 40 && tally.ok <= 300, "{tally:?}");
    assert_eq!(
        tally.codes.get(&503).copied().unwrap_or(0) + tally.ok,
        1_000,
        "only ok or 503: {tally:?}"
    );
    let stats = endpoint_data(&client, "slow")
        .await
        .expect("the worker answers $SRV.STATS");
    assert_eq!(
        stats["refused"],
        serde_json::json!(1_000 - tally.ok),
        "{stats}"
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_refuses_at_once_and_max_queue_zero_is_no_queue() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "slow.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.2 { } x }",
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.max_concurrency = 2;
    cfg.max_queue = 3;
    cfg.queue_wait_ms = 5_000;
    cfg.rhai.max_operations = 0;
    cfg.rhai.timeout_ms = 10_000;
    let _worker = worker(cfg).await;
    let client = server.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;
    let tally = burst(&client, "slow", Value::Nil, 10, Duration::from_secs(30)).await;
    // 2 run, 3 wait and run after them, 5 find the queue full.
    assert_eq!(
        (tally.ok, tally.codes.get(&503).copied()),
        (5, Some(5)),
        "{tally:?}"
    );

    let dir = plugins_dir(&[(
        "slow.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.2 { } x }",
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.max_concurrency = 2;
    cfg.max_queue = 0;
    cfg.rhai.max_operations = 0;
    let other = NatsServer::start();
    cfg.nats_url = other.url();
    let _worker = worker(cfg).await;
    let client = other.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;
    let tally = burst(&client, "slow", Value::Nil, 6, Duration::from_secs(30)).await;
    assert_eq!(
        (tally.ok, tally.codes.get(&503).copied()),
        (2, Some(4)),
        "{tally:?}"
    );
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_bounded_under_a_burst_of_100000() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "slow.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.001 { } x }",
    )]);
    let config_file = dir.path().join("worker.toml");
    std::fs::write(
        &config_file,
        "max_queue = 20000\n[rhai]\nmax_operations = 0\n",
    )
    .expect("config");
    let worker = WorkerProcess::spawn(&server, dir.path(), Some(&config_file));
    let client = server.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;
    let before = rss_mib(worker.child.id());
    let pid = worker.child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_mib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let body = Value::Binary(vec![7; 512]);
    let tally = burst(&client, "slow", body, 100_000, Duration::from_secs(60)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{tally:?}; RSS {before} MiB before, {peak} MiB at the peak");
    assert_eq!(tally.no_reply, 0, "every request answered: {tally:?}");
    assert!(
        tally.codes.keys().all(|code| *code == 503),
        "only ok or 503: {tally:?}"
    );
    assert!(
        tally.codes.get(&503).copied().unwrap_or(0) > 0,
        "the queue filled: {tally:?}"
    );
    assert!(peak < before + 250, "RSS grew from {before} to {peak} MiB");
}

/// Two processes spinning, one per core of this machine, until dropped.
struct BusyCores(Vec<std::process::Child>);

impl BusyCores {
    fn start() -> BusyCores {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BusyCores(
            (0..cores)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("a busy loop starts")
                })
                .collect(),
        )
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_waits_20_s_gets_every_answer_of_a_burst_on_busy_cores() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "work.rhai",
        "fn execute(x) { let t = timestamp(); while t.elapsed < 0.04 { } x }",
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.rhai.max_operations = 0;
    // A short timeout makes the rule without a deadline bite: a request must start within
    // 100 ms, and 40 x 40 ms take longer than that on any number of threads here.
    cfg.rhai.timeout_ms = 200;
    let worker = worker(cfg).await;
    let client = server.client().await;
    wait_for_plugin(&client, "work", Value::Nil).await;
    let _busy = BusyCores::start();
    // Without a deadline a request waits at most half the script's timeout: some get 503.
    let plain = burst(&client, "work", Value::Nil, 40, Duration::from_secs(20)).await;
    eprintln!("no deadline: {plain:?}");
    assert_eq!(plain.no_reply, 0, "{plain:?}");
    assert!(plain.codes.get(&503).is_some_and(|n| *n > 0), "{plain:?}");
    let waited = burst_with(
        &client,
        "work",
        Value::Nil,
        40,
        Duration::from_secs(20),
        true,
    )
    .await;
    eprintln!("20 s deadline: {waited:?}");
    assert_eq!(waited.ok, 40, "every request answered in time: {waited:?}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_past_its_callers_deadline_is_not_run_and_counted() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[(
        "slow.rhai",
        r#"fn execute(x) {
            let n = state_get("runs");
            if n == () { n = 0; }
            state_set("runs", n + 1);
            let t = timestamp();
            while t.elapsed < 0.3 { }
            n + 1
        }"#,
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.max_concurrency = 1;
    cfg.rhai.max_operations = 0;
    cfg.rhai.timeout_ms = 5_000;
    let worker = worker(cfg).await;
    let client = server.client().await;
    wait_for_plugin(&client, "slow", Value::Nil).await;
    let with_deadline = |in_ms: i64| {
        let mut headers = async_nats::HeaderMap::new();
        let at = wire::unix_ms() as i64 + in_ms;
        headers.insert(wire::HEADER_DEADLINE, at.to_string().as_str());
        headers
    };
    let body = wire::encode(&Value::Nil);
    let wait = Duration::from_secs(10);
    // Past on arrival: answered 408 at once, never run.
    let late = call_with_headers(&client, "slow", body.clone(), wait, with_deadline(-1_000))
        .await
        .expect("answered");
    assert_eq!(late.code(), Some(408), "{late:?}");
    assert!(late.message().contains("not run"), "{}", late.message());
    // One runs for 300 ms; the next, whose caller waits 100 ms, expires in the queue.
    let (first, second) = tokio::join!(
        call_with_headers(&client, "slow", body.clone(), wait, with_deadline(5_000)),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            call_with_headers(&client, "slow", body.clone(), wait, with_deadline(100)).await
        }
    );
    let first = first.expect("answered").expect_value();
    let second = second.expect("answered");
    assert_eq!(second.code(), Some(408), "{second:?}");
    let stats = endpoint_data(&client, "slow")
        .await
        .expect("the worker answers $SRV.STATS");
    assert_eq!(stats["expired"], serde_json::json!(2), "{stats}");
    // Only the first ran: the next run counts one more.
    let next = call(&client, "slow", Value::Nil).await.expect_value();
    let count = |v: &Value| v.as_i64().expect("a count");
    assert_eq!(
        count(&next),
        count(&first) + 1,
        "expired requests never ran"
    );
    drop(worker);
}
