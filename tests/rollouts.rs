//! Safe rollouts: plugins run and tested with no bus (`mofa run`, `mofa test`), test cases
//! run before a publish, environments with their own buckets and subjects, promotion of the
//! exact revision, canaries (share, sticky route keys, automatic rollback) and promote and
//! rollback under load, all against a real nats-server.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use common::{config, mofa, worker, NatsServer};
use futures::StreamExt;
use mofa_bus::config::ReloadConfig;
use mofa_bus::distribution::{Distribution, PluginRecord, ReloadEvent, ReloadStatus};
use mofa_bus::subjects::Namespace;
use mofa_bus::wire::{self, Value};

/// Runs `mofa ARGS` (no NATS flags) in `dir`.
fn mofa_here(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("mofa runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn mofa_run_answers_like_a_worker_in_the_same_sandbox() {
    let run = |args: &[&str]| mofa_here(&[&["run"], args].concat(), repo());
    let gold = r#"{"price": 100, "customer_tier": "gold"}"#;
    for plugin in [
        "plugins/discount.rhai",
        "plugins/discount_wasm.wasm",
        "plugins/discount_c.wasm",
        "plugins/discount_as.wasm",
        "plugins/scripts/calculate_discount.rhai",
    ] {
        let out = run(&[plugin, gold]);
        assert!(out.status.success(), "{plugin}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "80.0", "{plugin}");
        assert!(
            text(&out.stderr).contains("answered in"),
            "{plugin}: the time taken"
        );
    }
    let rules = run(&[
        "plugins/rules/content_moderation.rhai",
        r#"{"text": "well damn"}"#,
    ]);
    assert!(text(&rules.stdout).contains(r#""rule":"block_profanity""#));
    let tool = run(&["plugins/tools/weather.rhai", r#"{"city": 7}"#]);
    assert_eq!(tool.status.code(), Some(1));
    let stderr = text(&tool.stderr);
    assert!(
        stderr.contains("error 400") && stderr.contains("not of type"),
        "{stderr}"
    );
    let pricing = run(&[
        "plugins/order_pricing.rhai",
        r#"{"id": "A-1", "quantity": 12, "price": 10}"#,
    ]);
    assert!(text(&pricing.stdout).contains(r#""total":114.0"#));
    let processor = run(&[
        "plugins/order_processor.rhai",
        r#"{"id": "A-2", "quantity": 3, "price": 400}"#,
    ]);
    assert!(text(&processor.stdout).contains(r#""next_agent":"manager""#));
    let hello = run(&["plugins/hello_wasi.wasm", r#"{"name": "ada"}"#]);
    assert!(text(&hello.stdout).contains(r#""greeting":"hello, ada""#));
    let words = run(&["plugins/wordcount.wasm", r#"{"text": "a b a"}"#]);
    assert!(
        text(&words.stdout).contains(r#""words":3"#),
        "{}",
        text(&words.stderr)
    );

    // The worker's limits: a runaway script ends as a 408 at the configured deadline.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("spin.rhai"), "fn execute(x) { loop {} }").expect("script");
    std::fs::write(dir.path().join("broken.rhai"), "fn execute(x) { x +* }").expect("script");
    std::fs::write(
        dir.path().join("limits.toml"),
        "[rhai]\ntimeout_ms = 300\nmax_operations = 0\n",
    )
    .expect("config");
    let started = Instant::now();
    let spin = mofa_here(
        &["run", "spin.rhai", "1", "--config", "limits.toml"],
        dir.path(),
    );
    assert_eq!(spin.status.code(), Some(1), "{}", text(&spin.stderr));
    assert!(
        text(&spin.stderr).contains("error 408"),
        "{}",
        text(&spin.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let broken = mofa_here(&["run", "broken.rhai"], dir.path());
    assert_eq!(broken.status.code(), Some(2), "a file that does not load");

    // call_plugin reaches the native plugins: the database, loaded with the sample.
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let sql = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["sql", "plugins/examples/sales.sql", "--data-dir", data])
        .current_dir(repo())
        .output()
        .expect("mofa sql");
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    let analyzed = run(&["plugins/data_analyzer.rhai", "--data-dir", data]);
    assert!(
        text(&analyzed.stdout).contains(r#""total_sales":5175.62"#),
        "{} {}",
        text(&analyzed.stdout),
        text(&analyzed.stderr)
    );
}

#[test]
fn mofa_test_passes_every_shipped_case_and_fails_on_a_wrong_one() {
    let shipped = mofa_here(&["test"], repo());
    let stdout = text(&shipped.stdout);
    assert!(
        shipped.status.success(),
        "{stdout}\n{}",
        text(&shipped.stderr)
    );
    assert!(
        stdout.contains("0 plugin(s) failed; 0 plugin(s) built but have no cases"),
        "every example plugin has cases: {stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("double.rhai"), "fn execute(x) { x * 2 }").expect("script");
    std::fs::write(
        dir.path().join("double.test.toml"),
        "[[case]]\nname = \"two\"\ninput = 2\noutput = 4\n\n[[case]]\nname = \"wrong\"\ninput = 2\noutput = 5\n",
    )
    .expect("cases");
    let failed = mofa_here(&["test", "."], dir.path());
    let stdout = text(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    two"), "{stdout}");
    assert!(
        stdout.contains("FAIL  wrong: expected 5, got 4"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("double.test.toml"),
        "[[case]]\nname = \"two\"\ninput = 2\nexpected = 4\n",
    )
    .expect("cases");
    let broken = mofa_here(&["test", "double.test.toml"], dir.path());
    assert_eq!(broken.status.code(), Some(1));
    assert!(text(&broken.stdout).contains("unknown field `expected`"));
}

async fn bucket(server: &NatsServer, env: &str) -> Distribution {
    let config = ReloadConfig::default().in_env(env).expect("env");
    Distribution::open(server.client().await, &config)
        .await
        .expect("bucket")
}

/// The revision of `plugin` serving in `env`, which must exist.
async fn current(server: &NatsServer, env: &str, plugin: &str) -> (u64, PluginRecord) {
    bucket(server, env)
        .await
        .current(plugin)
        .await
        .expect("read")
        .unwrap_or_else(|| panic!("{plugin} is published in {env}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_case_blocks_a_publish_and_the_record_says_how_it_was_tested() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("double.rhai");
    std::fs::write(&script, "fn execute(x) { x * 3 }").expect("script");
    let cases = dir.path().join("double.test.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"two\"\ninput = 2\noutput = 4\n\n[[case]]\nname = \"zero\"\ninput = 0\noutput = 0\n",
    )
    .expect("cases");
    let script = script.to_str().expect("utf-8");

    let refused = mofa(&["publish", script], &server.url());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("nothing published"));
    let dist = bucket(&server, "production").await;
    assert!(dist.current("double").await.expect("read").is_none());

    let untested = mofa(&["publish", script, "--no-test"], &server.url());
    assert!(untested.status.success(), "{}", text(&untested.stderr));
    let (_, record) = current(&server, "production", "double").await;
    let tests = record.tests.expect("tests recorded");
    assert!(tests.skipped && tests.passed == 0, "{tests:?}");

    std::fs::write(dir.path().join("double.rhai"), "fn execute(x) { x * 2 }").expect("fixed");
    let tested = mofa(&["publish", script], &server.url());
    assert!(tested.status.success(), "{}", text(&tested.stderr));
    let (_, record) = current(&server, "production", "double").await;
    let tests = record.tests.expect("tests recorded");
    assert!(!tests.skipped && tests.passed == 2, "{tests:?}");
    let history = mofa(&["history", "double"], &server.url());
    let history = text(&history.stdout);
    assert!(
        history.contains("published untested (--no-test)")
            && history.contains("2 test cases passed"),
        "{history}"
    );
}

/// Calls `subject` and returns the value and the reply's headers.
async fn ask(
    client: &Client,
    subject: &str,
    route_key: Option<&str>,
) -> Result<(Value, async_nats::HeaderMap), String> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(key) = route_key {
        headers.insert(wire::HEADER_ROUTE_KEY, key);
    }
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(wire::encode(&Value::Nil))
        .timeout(Some(Duration::from_secs(5)));
    let reply = client
        .send_request(subject.to_string(), request)
        .await
        .map_err(|e| e.to_string())?;
    let headers = reply.headers.clone().unwrap_or_default();
    if let Some((code, message)) = wire::reply_error(reply.headers.as_ref()) {
        return Err(format!("{code}: {message}"));
    }
    let value = wire::decode(&reply.payload).map_err(|e| e.to_string())?;
    Ok((value, headers))
}

/// Waits until `subject` answers `want`.
async fn answers(client: &Client, subject: &str, want: &str) {
    let started = Instant::now();
    loop {
        if let Ok((value, _)) = ask(client, subject, None).await {
            if value == Value::from(want) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{subject} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn returning(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(format!("{name}.rhai"));
    std::fs::write(&path, format!("fn execute(x) {{ \"{value}\" }}")).expect("script");
    path.to_str().expect("utf-8").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_and_production_serve_their_own_revisions_and_promote_copies_the_exact_one() {
    let server = NatsServer::start();
    let url = server.url();
    let keygen = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .arg("keygen")
        .output()
        .expect("keygen");
    let keys = text(&keygen.stdout);
    let line = |prefix: &str| {
        keys.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("key line")
            .trim()
            .to_string()
    };
    let (seed, public) = (line("seed: "), line("public key: "));

    let plugins = tempfile::tempdir().expect("plugins");
    let mut production = config(&server, plugins.path());
    production.reload.trusted_keys = vec![public.clone()];
    let mut staging = production.clone();
    staging.reload.env = "staging".into();
    let _production = worker(production).await;
    let _staging = worker(staging).await;

    let files = tempfile::tempdir().expect("files");
    let v1 = returning(files.path(), "greet", "v1");
    let out = mofa(&["publish", &v1, "--sign", &seed], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v2 = returning(files.path(), "greet", "v2");
    let out = mofa(&["publish", &v2, "--sign", &seed, "--env", "staging"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("in staging"),
        "{}",
        text(&out.stdout)
    );

    let client = server.client().await;
    let production_subject = Namespace::production().exec("greet");
    let staging_subject = Namespace::of("staging").exec("greet");
    assert_eq!(staging_subject, "mofa-staging.exec.greet");
    answers(&client, &production_subject, "v1").await;
    answers(&client, &staging_subject, "v2").await;
    // Each environment only ever answers its own subjects.
    for _ in 0..50 {
        let (value, _) = ask(&client, &production_subject, None)
            .await
            .expect("reply");
        assert_eq!(value, Value::from("v1"));
    }
    let exec = mofa(&["exec", "greet", "--env", "staging"], &url);
    assert_eq!(
        text(&exec.stdout).trim(),
        "\"v2\"",
        "{}",
        text(&exec.stderr)
    );
    let listed = mofa(&["plugins", "--env", "staging", "--json"], &url);
    assert!(
        text(&listed.stdout).contains("greet"),
        "{}",
        text(&listed.stdout)
    );

    let promoted = mofa(
        &[
            "promote",
            "greet",
            "--from",
            "staging",
            "--to",
            "production",
        ],
        &url,
    );
    assert!(promoted.status.success(), "{}", text(&promoted.stderr));
    answers(&client, &production_subject, "v2").await;
    let (staged_revision, in_staging) = current(&server, "staging", "greet").await;
    let (_, in_production) = current(&server, "production", "greet").await;
    assert_eq!(in_production.sha256, in_staging.sha256);
    assert_eq!(in_production.signature, in_staging.signature);
    assert!(
        in_production.signature.is_some(),
        "signed, and the signature kept"
    );
    assert_eq!(
        in_production.promoted_from.as_deref(),
        Some(format!("staging@{staged_revision}").as_str())
    );

    // Rollback is per environment: production goes back to v1, staging keeps v2.
    let rolled = mofa(&["rollback", "greet"], &url);
    assert!(rolled.status.success(), "{}", text(&rolled.stderr));
    answers(&client, &production_subject, "v1").await;
    answers(&client, &staging_subject, "v2").await;
}

/// Waits for `n` reload events of `status` about `plugin` that satisfy `check`.
async fn reload_events(
    events: &mut async_nats::Subscriber,
    status: ReloadStatus,
    n: usize,
    check: impl Fn(&ReloadEvent) -> bool,
) -> Vec<ReloadEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < n {
        let message = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("{n} {status:?} events within 20 s; got {seen:?}"))
            .expect("events");
        let event: ReloadEvent = rmp_serde::from_slice(&message.payload).expect("reload event");
        if event.status == status && check(&event) {
            seen.push(event);
        }
    }
    seen
}

/// Requests sent from `loops` tasks until stopped; counts answers by value and failures.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    answers: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, subject: &str, loops: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let tasks = (0..loops)
            .map(|_| {
                let (client, subject) = (client.clone(), subject.to_string());
                let (stop, failures, answers) = (stop.clone(), failures.clone(), answers.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match ask(&client, &subject, None).await {
                            Ok((value, _)) => {
                                let key = value.as_str().unwrap_or("?").to_string();
                                *answers.lock().expect("lock").entry(key).or_default() += 1;
                            }
                            Err(e) => {
                                eprintln!("failed under load: {e}");
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            answers,
            tasks,
        }
    }

    fn count(&self, value: &str) -> u64 {
        self.answers
            .lock()
            .expect("lock")
            .get(value)
            .copied()
            .unwrap_or(0)
    }

    async fn finish(self) -> (u64, HashMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let answers = self.answers.lock().expect("lock").clone();
        (self.failures.load(Ordering::Relaxed), answers)
    }
}

/// Waits until `load` has seen `value` answered at least `n` more times than now.
async fn until_answered(load: &Load, value: &str, n: u64) {
    let from = load.count(value);
    let started = Instant::now();
    while load.count(value) < from + n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{value} answered {} times in 20 s",
            load.count(value) - from
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After a swap every worker has announced: `now` answers every request and `gone` none, and
/// no request of `load` failed. Requests that picked `gone` just before the swap finish on it,
/// so the count of `gone` is taken once 200 answers of `now` have come back.
async fn only_answers(load: Load, now: &str, gone: &str) {
    until_answered(&load, now, 200).await;
    let gone_before = load.count(gone);
    until_answered(&load, now, 500).await;
    assert_eq!(load.count(gone), gone_before, "{gone} still answers");
    let (failures, answers) = load.finish().await;
    assert_eq!(failures, 0, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_takes_its_share_keeps_route_keys_and_promote_and_rollback_lose_nothing() {
    let server = NatsServer::start();
    let url = server.url();
    let plugins = tempfile::tempdir().expect("plugins");
    let _workers = [
        worker(config(&server, plugins.path())).await,
        worker(config(&server, plugins.path())).await,
    ];
    let client = server.client().await;
    let subject = Namespace::production().exec("greet");
    let files = tempfile::tempdir().expect("files");
    let stable = returning(files.path(), "greet", "stable");
    let out = mofa(&["publish", &stable], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    answers(&client, &subject, "stable").await;

    let mut reloads = client
        .subscribe(Namespace::production().reload_event("greet"))
        .await
        .expect("reload events");
    let mut results = client
        .subscribe(Namespace::production().result_event("greet"))
        .await
        .expect("result events");
    let canary = returning(files.path(), "greet", "canary");
    let out = mofa(&["publish", &canary, "--canary", "20"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("20% canary beside revision 1"),
        "{}",
        text(&out.stdout)
    );
    reload_events(&mut reloads, ReloadStatus::Completed, 2, |e| {
        e.canary_of == Some(1)
    })
    .await;

    // 2,000 requests: 20% to the canary, within five standard deviations (±89).
    let mut by_value: BTreeMap<String, u64> = BTreeMap::new();
    let mut canary_headers = 0;
    for batch in 0..20 {
        let calls = (0..100).map(|_| ask(&client, &subject, None));
        for reply in futures::future::join_all(calls).await {
            let (value, headers) = reply.unwrap_or_else(|e| panic!("batch {batch}: {e}"));
            let value = value.as_str().expect("a string").to_string();
            let is_canary = headers.get(wire::HEADER_CANARY).is_some();
            let revision = headers
                .get(wire::HEADER_REVISION)
                .map(|v| v.as_str().to_string());
            assert_eq!(is_canary, value == "canary");
            assert_eq!(revision.as_deref(), Some(if is_canary { "2" } else { "1" }));
            canary_headers += usize::from(is_canary);
            *by_value.entry(value).or_default() += 1;
        }
    }
    let canaried = by_value.get("canary").copied().unwrap_or(0);
    println!("canary share: {canaried} of 2000 ({by_value:?})");
    assert!((311..=489).contains(&canaried), "{by_value:?}");
    assert_eq!(canary_headers as u64, canaried);
    // Result events name the revision and the canary too.
    let mut flagged = 0;
    for _ in 0..2000 {
        let message = tokio::time::timeout(Duration::from_secs(5), results.next())
            .await
            .expect("a result event")
            .expect("events");
        let event: mofa_bus::events::ResultEvent =
            rmp_serde::from_slice(&message.payload).expect("event");
        assert_eq!(event.revision, Some(if event.canary { 2 } else { 1 }));
        flagged += u64::from(event.canary);
    }
    assert_eq!(flagged, canaried);

    // A worker that starts while the canary runs loads its stable revision from the bucket's
    // history and serves both.
    let late = worker(config(&server, plugins.path())).await;
    assert_eq!(
        late.serving_revision("greet"),
        Some(1),
        "the stable revision"
    );
    let info = client
        .request(format!("$SRV.INFO.mofa.{}", late.id()), bytes::Bytes::new())
        .await
        .expect("the late worker answers INFO");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("JSON");
    let greet = info["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "greet"))
        .expect("greet listed");
    assert_eq!(greet["metadata"]["canary_revision"], "2", "{greet}");
    assert_eq!(greet["metadata"]["canary_percent"], "20", "{greet}");

    // A route key always reaches one variant, on any worker; keys spread over both.
    let mut sides = BTreeMap::new();
    for key in 0..60 {
        let key = format!("customer-{key}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let (value, _) = ask(&client, &subject, Some(&key)).await.expect("reply");
            seen.insert(value.as_str().expect("string").to_string());
        }
        assert_eq!(seen.len(), 1, "{key} saw {seen:?}");
        *sides
            .entry(seen.into_iter().next().expect("one"))
            .or_insert(0) += 1;
    }
    assert_eq!(sides.len(), 2, "60 keys land on both sides: {sides:?}");

    // `mofa canary` compares the two revisions from the fleet's result events.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["canary", "greet", "--for", "8s", "--json", "--nats", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mofa canary");
    let stderr = common::Lines::of(watcher.stderr.take().expect("stderr"), "mofa canary");
    let header = stderr.next_within(Duration::from_secs(10));
    assert!(
        header.contains("canary revision 2 answers 20% beside stable revision 1"),
        "{header}"
    );
    assert!(stderr
        .next_within(Duration::from_secs(10))
        .contains("watching"));
    for _ in 0..5 {
        let calls = (0..100).map(|_| ask(&client, &subject, None));
        futures::future::join_all(calls).await;
    }
    let output = watcher.wait_with_output().expect("mofa canary ends");
    assert!(output.status.success());
    let rows: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["revision"].clone(), rows[0]["canary"].clone()),
        (1.into(), false.into())
    );
    assert_eq!(
        (rows[1]["revision"].clone(), rows[1]["canary"].clone()),
        (2.into(), true.into())
    );
    let counted =
        rows[0]["requests"].as_u64().expect("n") + rows[1]["requests"].as_u64().expect("n");
    assert!(
        (500..=502).contains(&counted),
        "{counted} events for 500 requests"
    );

    // Promote under load: the canary becomes the only revision; no request fails.
    let load = Load::start(&client, &subject, 8);
    until_answered(&load, "stable", 100).await;
    let out = mofa(&["promote", "greet"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    reload_events(&mut reloads, ReloadStatus::Completed, 2, |e| {
        e.revision == 3 && e.canary_of.is_none()
    })
    .await;
    only_answers(load, "canary", "stable").await;

    // Rollback under load: a new canary beside the promoted revision is dropped.
    let next = returning(files.path(), "greet", "next");
    let out = mofa(&["publish", &next, "--canary", "50"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    reload_events(&mut reloads, ReloadStatus::Completed, 2, |e| {
        e.canary_of == Some(3)
    })
    .await;
    let load = Load::start(&client, &subject, 8);
    until_answered(&load, "next", 100).await;
    let out = mofa(&["rollback", "greet"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("back to revision 3"),
        "{}",
        text(&out.stdout)
    );
    reload_events(&mut reloads, ReloadStatus::Completed, 2, |e| {
        e.revision == 5 && e.canary_of.is_none()
    })
    .await;
    only_answers(load, "canary", "next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_throws_is_dropped_at_its_error_rate_and_announced() {
    let server = NatsServer::start();
    let url = server.url();
    let plugins = tempfile::tempdir().expect("plugins");
    let _worker = worker(config(&server, plugins.path())).await;
    let client = server.client().await;
    let subject = Namespace::production().exec("greet");
    let files = tempfile::tempdir().expect("files");
    let stable = returning(files.path(), "greet", "stable");
    assert!(mofa(&["publish", &stable], &url).status.success());
    answers(&client, &subject, "stable").await;

    let mut reloads = client
        .subscribe(Namespace::production().reload_event("greet"))
        .await
        .expect("reload events");
    let path = files.path().join("greet.rhai");
    std::fs::write(&path, "fn execute(x) { throw \"the canary is broken\" }").expect("script");
    let out = mofa(
        &[
            "publish",
            path.to_str().expect("utf-8"),
            "--canary",
            "50",
            "--max-error-rate",
            "10",
            "--min-requests",
            "20",
        ],
        &url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    reload_events(&mut reloads, ReloadStatus::Completed, 1, |e| {
        e.canary_of == Some(1)
    })
    .await;

    // Sequential requests: the canary fails every one it takes until its 20th, then is gone.
    let mut failed = 0;
    for _ in 0..300 {
        if let Err(e) = ask(&client, &subject, None).await {
            assert!(
                e.contains("500") && e.contains("the canary is broken"),
                "{e}"
            );
            failed += 1;
        }
    }
    assert_eq!(
        failed, 20,
        "the canary answers min_requests requests, all errors, then stops"
    );
    let dropped = reload_events(&mut reloads, ReloadStatus::RolledBack, 1, |_| true).await;
    let event = &dropped[0];
    assert_eq!((event.revision, event.canary_of), (1, Some(2)));
    let why = event.error.as_deref().unwrap_or_default();
    assert!(
        why.contains("max_error_rate of 10.0%") && why.contains("100.0% over 20"),
        "{why}"
    );
    for _ in 0..100 {
        let (value, _) = ask(&client, &subject, None)
            .await
            .expect("the stable revision");
        assert_eq!(value, Value::from("stable"));
    }
    // The worker counts it as a rollback in its reload outcomes.
    let stats = mofa(&["stats", "--json"], &url);
    let line = text(&stats.stdout)
        .lines()
        .find(|l| l.contains("\"greet\""))
        .map(str::to_string)
        .expect("greet's stats");
    let row: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(row["reloads_rolled_back"], 1, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mofa_watch_publishes_a_change_only_once_its_cases_pass() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("triple.rhai");
    std::fs::write(&script, "fn execute(x) { x * 2 }").expect("script");
    std::fs::write(
        dir.path().join("triple.test.toml"),
        "[[case]]\nname = \"three\"\ninput = 1\noutput = 3\n",
    )
    .expect("cases");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["watch", "--debounce", "100ms", "--nats", &server.url()])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mofa watch starts");
    let stderr = common::Lines::of(watcher.stderr.take().expect("stderr"), "mofa watch");
    let stdout = common::Lines::of(watcher.stdout.take().expect("stdout"), "mofa watch");
    let refused = loop {
        let line = stderr.next_within(Duration::from_secs(20));
        if line.starts_with("error:") {
            break line;
        }
    };
    assert!(
        refused.contains("not published: 1 of 1 test cases") && refused.contains("three"),
        "{refused}"
    );
    let dist = bucket(&server, "production").await;
    assert!(dist.current("triple").await.expect("read").is_none());

    std::fs::write(&script, "fn execute(x) { x * 3 }").expect("fixed");
    let published = stdout.next_within(Duration::from_secs(20));
    assert!(
        published.contains("published triple as revision"),
        "{published}"
    );
    let (_, record) = current(&server, "production", "triple").await;
    assert_eq!(record.tests.map(|t| t.passed), Some(1));
    let _ = watcher.kill();
    let _ = watcher.wait();
}
