//! The least-privilege users of `deploy/nats/permissions.conf`, on a real nats-server run from
//! `deploy/nats/single.conf`: `mofa setup` (admin) makes the streams and buckets, then the
//! normal flows work for each role (a worker serves, follows the bucket and runs jobs, a client
//! requests, submits jobs and uses MCP, a publisher publishes, canaries, promotes and rolls
//! back, a monitor watches and reads dead letters), and the attack matrix: every JetStream
//! administration, foreign write, foreign read and impersonating subscription a runtime role
//! might try is refused by the server, and every stream's data is intact afterwards.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use mofa_bus::wire::Value;

/// The shipped config reads the passwords from nats-server's environment.
const PASSWORDS: &[(&str, &str)] = &[
    ("MOFA_ADMIN_PASSWORD", "admin-secret"),
    ("MOFA_WORKER_PASSWORD", "worker-secret"),
    ("MOFA_CLIENT_PASSWORD", "client-secret"),
    ("MOFA_PUBLISHER_PASSWORD", "publisher-secret"),
    ("MOFA_MONITOR_PASSWORD", "monitor-secret"),
];

fn secure_server() -> NatsServer {
    NatsServer::start_deploy("single.conf", PASSWORDS, None, |text, _| text.to_string())
}

/// `mofa ARGS --nats URL`, connecting as `user` (credentials in the environment, as the
/// deployment docs say).
fn mofa_command(user: &str, server: &NatsServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mofa"));
    command
        .args(args)
        .args(["--nats", &server.url()])
        .env("MOFA_NATS_USER", user)
        .env("MOFA_NATS_PASSWORD", format!("{user}-secret"));
    command
}

/// Runs `mofa ARGS` as `user` against `server`.
fn mofa_as(user: &str, server: &NatsServer, args: &[&str]) -> std::process::Output {
    mofa_command(user, server, args)
        .output()
        .expect("mofa runs")
}

/// `mofa setup production staging` as admin; its output.
fn setup(server: &NatsServer) -> String {
    let out = mofa_as("admin", server, &["setup", "production", "staging"]);
    assert!(out.status.success(), "mofa setup: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client connected as `user`, with the server errors it is told about.
async fn connect_as(
    server: &NatsServer,
    user: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.to_string(),
        format!("{user}-secret"),
    )
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    })
    .connect(server.url())
    .await
    .expect("connects with its password");
    (client, rx)
}

/// The next server error within 5 s.
async fn refusal(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("the server refused it")
        .expect("channel open")
        .to_lowercase()
}

fn script(dir: &std::path::Path, name: &str, source: &str) -> String {
    let path = dir.join(format!("{name}.rhai"));
    std::fs::write(&path, source).expect("written");
    path.to_str().expect("utf-8").to_string()
}

/// The worker's config: its credentials, and jobs that give up quickly.
fn worker_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("worker.toml");
    std::fs::write(
        &config,
        "[nats]\nuser = \"worker\"\npassword = \"worker-secret\"\n\n[jobs]\nmax_deliver = 2\nbackoff_ms = [100]\n",
    )
    .expect("config written");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_job_and_nothing_it_must_not() {
    let server = secure_server();
    let sources = tempfile::tempdir().expect("temp dir");

    // Anonymous connections are refused.
    assert!(
        async_nats::connect(server.url()).await.is_err(),
        "no anonymous access"
    );

    // Before `mofa setup`, a publisher may not make the buckets, and says what to do.
    let v1 = script(
        sources.path(),
        "greet",
        r#"fn execute(input) { `hello, ${input}` }"#,
    );
    let out = mofa_as("publisher", &server, &["publish", &v1]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("run `mofa setup` once with an admin credential"),
        "{out:?}"
    );
    // The admin makes everything once; a second run finds it all.
    let first = setup(&server);
    for made in [
        "created bucket mofa_plugins",
        "created bucket mofa_plugins_staging",
        "created object store mofa_modules",
        "created stream MOFA_JOBS",
        "created stream MOFA_DLQ",
        "created bucket mofa_results",
    ] {
        assert!(first.contains(made), "{made}: {first}");
    }
    let out = mofa_as("publisher", &server, &["publish", &v1]);
    assert!(out.status.success(), "publisher publishes: {out:?}");
    let again = setup(&server);
    assert_eq!(
        again
            .lines()
            .filter(|l| l.starts_with("created"))
            .collect::<Vec<_>>(),
        ["created consumer MOFA_JOBS/jobs-greet"],
        "a consumer per published plugin, the rest found: {again}"
    );
    let third = setup(&server);
    assert!(!third.contains("created"), "{third}");

    // The worker: credentials from its config file's [nats] section.
    let weather = std::fs::read_to_string(repo_plugins().join("tools/weather.rhai"))
        .expect("the weather tool");
    let plugins = plugins_dir(&[
        ("local.rhai", "fn execute(input) { input }"),
        (
            "fails.rhai",
            r#"fn execute(input) { throw "down for now" }"#,
        ),
        ("weather.rhai", &weather),
    ]);
    let config = worker_config(plugins.path());
    let _worker = WorkerProcess::spawn(&server, plugins.path(), Some(&config));

    let (client, mut client_errors) = connect_as(&server, "client").await;
    wait_for_plugin(&client, "greet", Value::from("ada")).await;
    assert_eq!(
        call(&client, "greet", Value::from("ada"))
            .await
            .expect_value(),
        Value::from("hello, ada")
    );
    assert_eq!(
        call(&client, "local", Value::from(7)).await.expect_value(),
        Value::from(7)
    );
    let out = mofa_as(
        "client",
        &server,
        &[
            "exec",
            "discount_native",
            r#"{"price": 100, "customer_tier": "gold"}"#,
        ],
    );
    assert!(out.status.success(), "client runs mofa exec: {out:?}");
    let out = mofa_as("client", &server, &["plugins", "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"greet\""),
        "client lists the fleet: {out:?}"
    );
    // Durable jobs: the worker runs them, the client reads the result.
    let out = mofa_as(
        "client",
        &server,
        &["submit", "greet", r#""job""#, "--wait", "--timeout", "20s"],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello, job"),
        "client submits a job and reads its result: {out:?}"
    );
    // A job that keeps failing is retried, then dead-lettered; the monitor lists it, the admin
    // replays it.
    let out = mofa_as(
        "client",
        &server,
        &[
            "submit",
            "fails",
            "1",
            "--id",
            "doomed",
            "--wait",
            "--timeout",
            "20s",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"failed\"") && stdout.contains("\"attempts\":2"),
        "retried then failed: {out:?}"
    );
    let out = mofa_as("monitor", &server, &["dlq", "fails"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("doomed") && stdout.contains("down for now"),
        "the monitor reads the dead letters: {out:?}"
    );
    let out = mofa_as("monitor", &server, &["dlq", "fails", "--replay"]);
    assert!(!out.status.success(), "a monitor cannot replay: {out:?}");
    let out = mofa_as("admin", &server, &["dlq", "fails", "--replay"]);
    assert!(out.status.success(), "the admin replays: {out:?}");

    // A client cannot pose as a worker: its subscription to mofa.exec.> is refused, and the
    // requests still reach the real worker.
    let mut impostor = client
        .queue_subscribe("mofa.exec.greet", "mofa".to_string())
        .await
        .expect("subscribe sent");
    let refused = refusal(&mut client_errors).await;
    assert!(
        refused.contains("permissions violation for subscription to \"mofa.exec.greet\""),
        "{refused}"
    );
    for _ in 0..5 {
        assert_eq!(
            call(&client, "greet", Value::from("bo"))
                .await
                .expect_value(),
            Value::from("hello, bo")
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), impostor.next())
            .await
            .map_or(true, |m| m.is_none()),
        "the impostor got no request"
    );

    // A client cannot write the bucket, nor read plugin source.
    let evil = script(sources.path(), "greet", r#"fn execute(input) { "pwned" }"#);
    let out = mofa_as("client", &server, &["publish", &evil]);
    assert!(!out.status.success(), "a client's publish fails: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("permissions violation"),
        "and says why: {stderr}"
    );
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        jetstream::new(client.clone()).get_key_value("mofa_plugins"),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "a client cannot open the plugins bucket"
    );

    // `mofa mcp` as the client, driven by the official MCP SDK: it lists and calls the fleet's
    // tools, and hears of one the publisher adds.
    let url = server
        .url()
        .replace("nats://", "nats://client:client-secret@");
    let mut mcp = mcp_client()
        .await
        .args([env!("CARGO_BIN_EXE_mofa"), &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the MCP client starts");
    let lines = Lines::of(mcp.stdout.take().expect("stdout"), "the MCP client");
    let listed = lines.next_json();
    assert!(listed.to_string().contains("get_weather"), "{listed}");
    let good = lines.next_json();
    assert_eq!(good["is_error"], false, "{good}");
    let _bad = lines.next_json();
    let _missing = lines.next_json();
    assert_eq!(lines.next_json()["waiting"], "tools/list_changed");
    let adder = script(
        sources.path(),
        "adder",
        r#"let tool = #{ name: "add_numbers", description: "Adds", parameters: #{ type: "object" } };
        fn execute(args) { args.a + args.b }"#,
    );
    let out = mofa_as("publisher", &server, &["publish", &adder]);
    assert!(out.status.success(), "{out:?}");
    let after = lines.next_json();
    assert!(after.to_string().contains("add_numbers"), "{after}");
    let _ = mcp.kill();
    let _ = mcp.wait();

    // A module through the object store: the publisher stores it (twice: the second finds
    // it stored), the worker fetches it.
    let (publisher, _) = connect_as(&server, "publisher").await;
    let modules = mofa_bus::distribution::Distribution::open(
        publisher,
        &mofa_bus::config::ReloadConfig::default(),
    )
    .await
    .expect("the publisher opens the buckets");
    for _ in 0..2 {
        modules
            .publish_file(&repo_plugins().join("discount_wasm.wasm"), None, 0)
            .await
            .expect("published through the object store");
    }
    let order = map(&[
        ("price", Value::from(100)),
        ("customer_tier", Value::from("gold")),
    ]);
    wait_for_plugin(&client, "discount_wasm", order.clone()).await;
    assert_eq!(
        call(&client, "discount_wasm", order).await.expect_value(),
        Value::from(80.0)
    );

    // The publisher: a canary, promoted; a new revision through staging; a rollback.
    let mut reloads = client
        .subscribe("mofa.events.reload.greet")
        .await
        .expect("a client reads events");
    client.flush().await.expect("flushed");
    let v2 = script(
        sources.path(),
        "greet",
        r#"fn execute(input) { `hi, ${input}` }"#,
    );
    let out = mofa_as("publisher", &server, &["publish", &v2, "--canary", "50"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    let canary = mofa_command(
        "publisher",
        &server,
        &["canary", "greet", "--for", "3s", "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("mofa canary runs");
    // Traffic while it watches.
    let watching = std::time::Instant::now();
    while watching.elapsed() < Duration::from_secs(3) {
        call(&client, "greet", Value::from("c"))
            .await
            .expect_value();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = canary.wait_with_output().expect("mofa canary ends");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"canary\":true"),
        "the publisher watches its canary: {out:?}"
    );
    let out = mofa_as("publisher", &server, &["promote", "greet"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        call(&client, "greet", Value::from("di"))
            .await
            .expect_value(),
        Value::from("hi, di")
    );
    let v3 = script(
        sources.path(),
        "greet",
        r#"fn execute(input) { `hey, ${input}` }"#,
    );
    let out = mofa_as("publisher", &server, &["publish", &v3, "--env", "staging"]);
    assert!(out.status.success(), "{out:?}");
    let out = mofa_as(
        "publisher",
        &server,
        &[
            "promote",
            "greet",
            "--from",
            "staging",
            "--to",
            "production",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        call(&client, "greet", Value::from("jo"))
            .await
            .expect_value(),
        Value::from("hey, jo")
    );
    let out = mofa_as("publisher", &server, &["rollback", "greet"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        call(&client, "greet", Value::from("ed"))
            .await
            .expect_value(),
        Value::from("hi, ed")
    );

    // The monitor watches events and the fleet's stats, and cannot call a plugin.
    let out = mofa_as("monitor", &server, &["stats", "--json"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"greet\""),
        "{out:?}"
    );
    let mut events = mofa_command("monitor", &server, &["events", "greet"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mofa events runs");
    let lines = Lines::of(events.stdout.take().expect("stdout"), "mofa events");
    // `mofa events` subscribes before it prints anything: requests until one is seen.
    let mut seen = None;
    for _ in 0..50 {
        call(&client, "greet", Value::from("fi"))
            .await
            .expect_value();
        if let Some(line) = lines.try_next_within(Duration::from_millis(100)) {
            seen = Some(line);
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(seen.is_some_and(|l| l.contains("\"plugin\":\"greet\"")));
    let out = mofa_as(
        "monitor",
        &server,
        &["exec", "greet", r#""x""#, "--timeout", "1s"],
    );
    assert!(
        !out.status.success(),
        "a monitor cannot call plugins: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("permissions violation for publish to \"mofa.exec.greet\""),
        "{out:?}"
    );
}

/// Waits for the next `completed` reload event.
async fn wait_for_reload(reloads: &mut async_nats::Subscriber) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), reloads.next())
            .await
            .expect("a reload event")
            .expect("open");
        let event = mofa_bus::wire::to_json(
            &mofa_bus::wire::decode(&message.payload).expect("MessagePack"),
        );
        if event["status"] == "completed" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_setup_serves_and_follows_the_bucket_once_it_exists() {
    let server = secure_server();
    let plugins = plugins_dir(&[]);
    let config = plugins.path().join("worker.toml");
    std::fs::write(
        &config,
        "[nats]\nuser = \"worker\"\npassword = \"worker-secret\"\n",
    )
    .expect("config written");
    let _worker = WorkerProcess::spawn(&server, plugins.path(), Some(&config));
    let (client, _) = connect_as(&server, "client").await;
    wait_for_plugin(&client, "echo", Value::from(1)).await;
    setup(&server);
    let sources = tempfile::tempdir().expect("temp dir");
    let file = script(sources.path(), "late", "fn execute(input) { input + 1 }");
    let out = mofa_as("publisher", &server, &["publish", &file]);
    assert!(out.status.success(), "{out:?}");
    wait_for_plugin(&client, "late", Value::from(1)).await;
    assert_eq!(
        call(&client, "late", Value::from(1)).await.expect_value(),
        Value::from(2)
    );
}

#[test]
fn bad_connection_settings_are_refused_with_the_fix() {
    let server = secure_server();
    let wrong = mofa(
        &[
            "exec",
            "echo",
            "1",
            "--user",
            "client",
            "--password",
            "nope",
        ],
        &server.url(),
    );
    assert_eq!(wrong.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(stderr.contains("authorization"), "{stderr}");
    assert!(
        stderr.contains("--password (set $mofa_nats_password instead)"),
        "a password given as a flag is warned about: {stderr}"
    );
    // A credential is never repeated: not a wrong one in the URL, not a right one in a
    // worker's logs (at debug level), not one from the environment.
    let secret = "horse-battery-staple";
    let in_url = server
        .url()
        .replace("nats://", &format!("nats://client:{secret}@"));
    let out = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["exec", "echo", "1", "--nats", &in_url])
        .output()
        .expect("mofa runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("authorization violation"),
        "the URL's credentials are used: {stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["exec", "echo", "1", "--nats", &server.url()])
        .env("MOFA_NATS_USER", "client")
        .env("MOFA_NATS_PASSWORD", secret)
        .output()
        .expect("mofa runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(secret) && !stderr.contains("warning: secrets"),
        "{stderr}"
    );
    let plugins = plugins_dir(&[]);
    let config = plugins.path().join("worker.toml");
    std::fs::write(
        &config,
        "[nats]\nuser = \"worker\"\npassword = \"worker-secret\"\n",
    )
    .expect("config written");
    let (worker, logs) = WorkerCommand::new(&server.url(), plugins.path())
        .config(&config)
        .env("RUST_LOG", "debug")
        .spawn_logged("the worker");
    let mut seen = 0;
    let reading = std::time::Instant::now();
    while let Some(line) = logs.try_next_within(Duration::from_secs(3)) {
        assert!(!line.contains("worker-secret"), "{line}");
        seen += 1;
        if reading.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    assert!(seen > 0, "the worker logged");
    drop(worker);
    let half = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args([
            "exec",
            "echo",
            "1",
            "--nats",
            &server.url(),
            "--user",
            "client",
        ])
        .env_remove("MOFA_NATS_PASSWORD")
        .output()
        .expect("mofa runs");
    assert_eq!(half.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("user and password go together"),
        "{half:?}"
    );
    let list = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args([
            "exec",
            "echo",
            "1",
            "--nats",
            "nats://127.0.0.1:1,bogus url",
        ])
        .output()
        .expect("mofa runs");
    assert_eq!(list.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("\"bogus url\" is invalid"),
        "{list:?}"
    );
}

/// The streams every attack aims at: each mofa stream and another environment's bucket.
const STREAMS: &[&str] = &[
    "MOFA_JOBS",
    "MOFA_DLQ",
    "KV_mofa_results",
    "KV_mofa_plugins",
    "KV_mofa_plugins_staging",
    "OBJ_mofa_modules",
];

/// One connection of a role, keeping every error the server sends it.
struct Attacker {
    name: &'static str,
    client: async_nats::Client,
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Attacker {
    async fn connect(server: &NatsServer, name: &'static str) -> Attacker {
        let (client, mut reported) = connect_as(server, name).await;
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = errors.clone();
        tokio::spawn(async move {
            while let Some(error) = reported.recv().await {
                kept.lock().expect("errors").push(error.to_lowercase());
            }
        });
        Attacker {
            name,
            client,
            errors,
        }
    }

    /// Sends a request to `subject` (a JetStream API call, or a publish that expects an
    /// ack); true when anything answered within 2 s.
    async fn request(&self, subject: String, payload: &'static str) -> (String, bool) {
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.request(subject.clone(), payload.into()),
        )
        .await
        .is_ok_and(|reply| reply.is_ok());
        (subject, answered)
    }

    /// Whether the server reported refusing `what` (`publish to "…"`, `subscription to "…"`),
    /// waiting up to 5 s for the report.
    async fn was_refused(&self, what: &str) -> bool {
        let wanted = format!("permissions violation for {}", what.to_lowercase());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self
                .errors
                .lock()
                .expect("errors")
                .iter()
                .any(|e| e.contains(&wanted))
            {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What each stream holds, as the admin sees it: its messages (count, first and last
/// sequence), and the durable consumers of the jobs stream.
async fn holdings(admin: &jetstream::Context) -> Vec<(String, u64, u64, u64)> {
    let mut all = Vec::new();
    for name in STREAMS {
        let mut stream = admin.get_stream(*name).await.expect("the stream is there");
        let info = stream.info().await.expect("info");
        all.push((
            name.to_string(),
            info.state.messages,
            info.state.first_sequence,
            info.state.last_sequence,
        ));
    }
    let jobs = admin.get_stream("MOFA_JOBS").await.expect("jobs stream");
    for plugin in ["greet", "fails", "parked"] {
        let info = jobs
            .consumer_info(format!("jobs-{plugin}"))
            .await
            .expect("the consumer is there");
        all.push((
            info.name.clone(),
            info.num_pending,
            info.num_ack_pending as u64,
            0,
        ));
    }
    all
}

/// Every runtime role tries what it must not: the server refuses each attempt (none is
/// answered, and the server names it in a permissions violation), and afterwards every stream
/// holds what it held, the plugin still serves its revision and the queued jobs still wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_matrix_is_refused_and_nothing_is_lost() {
    let server = secure_server();
    setup(&server);
    let sources = tempfile::tempdir().expect("temp dir");
    let greet = script(
        sources.path(),
        "greet",
        r#"fn execute(input) { `hello, ${input}` }"#,
    );
    for env in ["production", "staging"] {
        let out = mofa_as("publisher", &server, &["publish", &greet, "--env", env]);
        assert!(out.status.success(), "{out:?}");
    }
    let plugins = plugins_dir(&[("fails.rhai", r#"fn execute(input) { throw "no" }"#)]);
    let config = worker_config(plugins.path());
    let _worker = WorkerProcess::spawn(&server, plugins.path(), Some(&config));
    let (client, _) = connect_as(&server, "client").await;
    wait_for_plugin(&client, "greet", Value::from("a")).await;
    // Data in every stream: a stored result, a dead letter, two jobs queued for a plugin
    // nobody serves (its consumer made by the admin), a module object.
    for (plugin, id) in [("greet", "kept"), ("fails", "lost")] {
        let out = mofa_as(
            "client",
            &server,
            &[
                "submit",
                plugin,
                "1",
                "--id",
                id,
                "--wait",
                "--timeout",
                "20s",
            ],
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(id), "{out:?}");
    }
    let (admin_client, _) = connect_as(&server, "admin").await;
    let jobs = mofa_bus::jobs::Jobs::open(admin_client.clone(), &Default::default())
        .await
        .expect("the admin opens the jobs streams");
    jobs.provision_consumer("parked").await.expect("consumer");
    for n in 0..2 {
        jobs.submit("parked", &Value::from(n), None)
            .await
            .expect("queued");
    }
    let admin = jetstream::new(admin_client.clone());
    admin
        .get_object_store("mofa_modules")
        .await
        .expect("object store")
        .put("module", &mut &b"\0asm"[..])
        .await
        .expect("object stored");
    let before = holdings(&admin).await;

    // Every attempt is made before anything is asserted, so a failure lists them all.
    let mut breaches = Vec::new();
    for name in ["worker", "client", "publisher", "monitor"] {
        let attacker = Attacker::connect(&server, name).await;
        let mut requests = Vec::new();
        for stream in STREAMS {
            for op in ["DELETE", "PURGE", "UPDATE", "MSG.DELETE", "SNAPSHOT"] {
                requests.push((format!("$JS.API.STREAM.{op}.{stream}"), "{\"seq\":1}"));
            }
        }
        requests.extend([
            (
                "$JS.API.STREAM.CREATE.CAPTURE".to_string(),
                r#"{"name":"CAPTURE","subjects":["mofa.exec.>"]}"#,
            ),
            (
                "$JS.API.CONSUMER.DELETE.MOFA_JOBS.jobs-parked".to_string(),
                "",
            ),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.MOFA_JOBS.thief".to_string(),
                "{}",
            ),
        ]);
        // Consumers on streams the role does not read.
        let unused: &[&str] = match name {
            "worker" => &["MOFA_DLQ", "KV_mofa_results", "KV_mofa_plugins_staging"],
            "publisher" => &["MOFA_JOBS", "MOFA_DLQ", "KV_mofa_results"],
            "client" => &[
                "MOFA_JOBS",
                "MOFA_DLQ",
                "KV_mofa_results",
                "KV_mofa_plugins",
                "OBJ_mofa_modules",
            ],
            _ => &[
                "MOFA_JOBS",
                "KV_mofa_results",
                "KV_mofa_plugins",
                "KV_mofa_plugins_staging",
                "OBJ_mofa_modules",
            ],
        };
        for stream in unused {
            requests.push((format!("$JS.API.CONSUMER.CREATE.{stream}"), "{}"));
        }
        if name != "worker" {
            // Taking a plugin's jobs from the workers.
            requests.push((
                "$JS.API.CONSUMER.CREATE.MOFA_JOBS.thief.mofa.jobs.parked".to_string(),
                "{}",
            ));
        }
        // Writes it does not own, and reads of what is not its to read.
        let mut writes: Vec<&str> = vec![];
        if name != "publisher" {
            writes.extend([
                "$KV.mofa_plugins.greet",
                "$KV.mofa_plugins_staging.greet",
                "$O.mofa_modules.M.bW9kdWxl",
                "$JS.API.DIRECT.GET.KV_mofa_plugins_staging.$KV.mofa_plugins_staging.greet",
                "$JS.API.STREAM.INFO.KV_mofa_plugins_staging",
            ]);
        }
        if name != "worker" {
            writes.extend([
                "$KV.mofa_results.kept",
                "mofa.results.kept",
                "mofa.dlq.fails",
                "mofa.events.reload.greet",
                "mofa.events.result.greet",
            ]);
        }
        if name == "client" || name == "monitor" {
            writes.push("$JS.API.DIRECT.GET.KV_mofa_plugins.$KV.mofa_plugins.greet");
            writes.push("$JS.API.STREAM.MSG.GET.KV_mofa_plugins");
        }
        if name == "publisher" || name == "monitor" {
            writes.push("$JS.API.DIRECT.GET.KV_mofa_results.$KV.mofa_results.kept");
        }
        if name != "client" {
            writes.push("mofa.jobs.parked");
        }
        if name == "monitor" {
            writes.push("mofa.exec.greet");
        }
        for subject in writes {
            requests.push((subject.to_string(), "\"forged\""));
        }
        let total = requests.len();
        let answered = futures::future::join_all(
            requests
                .into_iter()
                .map(|(subject, payload)| attacker.request(subject, payload)),
        )
        .await;
        for (subject, was_answered) in &answered {
            if *was_answered {
                breaches.push(format!("{name}: {subject} was answered"));
            } else if !attacker
                .was_refused(&format!("publish to \"{subject}\""))
                .await
            {
                breaches.push(format!("{name}: the server did not refuse {subject}"));
            }
        }
        // Impersonating a worker: requests outside the queue group, the Services API.
        let mut subscriptions = vec!["mofa.exec.>", "mofa.jobs.>"];
        if name != "worker" {
            subscriptions.push("$SRV.PING");
        }
        for subject in &subscriptions {
            let _ = attacker.client.subscribe(subject.to_string()).await;
            if !attacker
                .was_refused(&format!("subscription to \"{subject}\""))
                .await
            {
                breaches.push(format!("{name}: subscribing to {subject} was not refused"));
            }
        }
        println!(
            "{}: {} operations attempted",
            attacker.name,
            total + subscriptions.len()
        );
    }

    assert!(
        breaches.is_empty(),
        "{} attacks were not refused:\n{}",
        breaches.len(),
        breaches.join("\n")
    );
    // Nothing was lost: the same messages and consumers, the plugin and the result intact.
    assert_eq!(holdings(&admin).await, before);
    assert_eq!(
        call(&client, "greet", Value::from("bo"))
            .await
            .expect_value(),
        Value::from("hello, bo")
    );
    let kept = jobs.result("kept").await.expect("read").expect("stored");
    assert_eq!(kept.output, Some(Value::from("hello, 1")));
    assert_eq!(
        jobs.dead_letters(Some("fails")).await.expect("read").len(),
        1
    );
    let parked = admin
        .get_stream("MOFA_JOBS")
        .await
        .expect("stream")
        .consumer_info("jobs-parked")
        .await
        .expect("the consumer is there");
    assert_eq!(parked.num_pending, 2, "both queued jobs still wait");
}

/// Two tenant accounts on one server (`deploy/nats/tenants.conf`), their passwords
/// `<user>-secret`.
fn tenants_server() -> NatsServer {
    let mut passwords = Vec::new();
    for tenant in ["a", "b"] {
        for role in ["admin", "worker", "client", "publisher", "monitor"] {
            passwords.push((
                format!(
                    "MOFA_{}_{}_PASSWORD",
                    tenant.to_uppercase(),
                    role.to_uppercase()
                ),
                format!("{tenant}-{role}-secret"),
            ));
        }
    }
    let passwords: Vec<(&str, &str)> = passwords
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    NatsServer::start_deploy("tenants.conf", &passwords, None, |text, _| text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_serve_at_once_and_see_nothing_of_each_other() {
    let server = tenants_server();
    let sources = tempfile::tempdir().expect("temp dir");
    let mut workers = Vec::new();
    for tenant in ["a", "b"] {
        let out = mofa_as(&format!("{tenant}-admin"), &server, &["setup"]);
        assert!(out.status.success(), "{tenant}'s setup: {out:?}");
        let dir = sources.path().join(tenant);
        std::fs::create_dir_all(&dir).expect("dir");
        let greet = script(
            &dir,
            "greet",
            &format!("fn execute(input) {{ `{tenant} greets ${{input}}` }}"),
        );
        let own = script(
            &dir,
            &format!("only_{tenant}"),
            "fn execute(input) { input }",
        );
        let out = mofa_as(
            &format!("{tenant}-publisher"),
            &server,
            &["publish", &greet, &own],
        );
        assert!(out.status.success(), "{tenant} publishes: {out:?}");
        let plugins = plugins_dir(&[]);
        let config = plugins.path().join("worker.toml");
        std::fs::write(
            &config,
            format!("[nats]\nuser = \"{tenant}-worker\"\npassword = \"{tenant}-worker-secret\"\n"),
        )
        .expect("config written");
        workers.push((
            WorkerProcess::spawn(&server, plugins.path(), Some(&config)),
            plugins,
        ));
    }
    let (a, _) = connect_as(&server, "a-client").await;
    let (b, _) = connect_as(&server, "b-client").await;
    wait_for_plugin(&a, "only_a", Value::from(1)).await;
    wait_for_plugin(&b, "only_b", Value::from(1)).await;

    // Each tenant's events, while both fleets serve.
    let mut a_events = a.subscribe("mofa.events.>").await.expect("subscribed");
    a.flush().await.expect("flushed");
    for _ in 0..20 {
        assert_eq!(
            call(&a, "greet", Value::from("x")).await.expect_value(),
            Value::from("a greets x")
        );
        assert_eq!(
            call(&b, "greet", Value::from("x")).await.expect_value(),
            Value::from("b greets x")
        );
    }
    // A cannot call B's plugin, nor list it.
    let reply = call_raw(&a, "only_b", wire_nil(), Duration::from_secs(2)).await;
    assert!(
        reply.is_err(),
        "no responder in A for B's plugin: {reply:?}"
    );
    let out = mofa_as("a-client", &server, &["plugins", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("only_a") && !listed.contains("only_b"),
        "{listed}"
    );
    // A's events are A's only: twenty result events of `greet` from A's fleet, none of B's.
    let mut seen = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), a_events.next()).await
    {
        let event =
            mofa_bus::wire::to_json(&mofa_bus::wire::decode(&event.payload).expect("MessagePack"));
        assert_ne!(event["plugin"], "only_b", "{event}");
        if event["plugin"] == "greet" {
            assert_eq!(event["output"], "a greets x", "{event}");
            seen += 1;
        }
    }
    assert_eq!(seen, 20, "A's own result events");

    // B's jobs wait in B's stream; A's admin sees its own (empty) stream and, deleting it,
    // loses nothing of B's.
    let (b_admin, _) = connect_as(&server, "b-admin").await;
    let b_jobs = mofa_bus::jobs::Jobs::open(b_admin.clone(), &Default::default())
        .await
        .expect("B's jobs");
    b_jobs.provision_consumer("parked").await.expect("consumer");
    b_jobs
        .submit("parked", &Value::from(1), None)
        .await
        .expect("queued");
    let (a_admin, _) = connect_as(&server, "a-admin").await;
    let a_js = jetstream::new(a_admin);
    let mut a_stream = a_js.get_stream("MOFA_JOBS").await.expect("A's jobs stream");
    assert_eq!(a_stream.info().await.expect("info").state.messages, 0);
    a_js.delete_stream("MOFA_JOBS")
        .await
        .expect("A's admin deletes A's stream");
    let mut b_stream = jetstream::new(b_admin)
        .get_stream("MOFA_JOBS")
        .await
        .expect("B's jobs stream is still there");
    assert_eq!(b_stream.info().await.expect("info").state.messages, 1);
    // And B's plugins are not in A's bucket.
    let (a_publisher, _) = connect_as(&server, "a-publisher").await;
    let kv = jetstream::new(a_publisher)
        .get_key_value("mofa_plugins")
        .await
        .expect("A's bucket");
    assert!(kv.get("only_b").await.expect("read").is_none());
    assert!(kv.get("only_a").await.expect("read").is_some());
    drop(workers);
}

fn wire_nil() -> bytes::Bytes {
    mofa_bus::wire::encode(&Value::Nil)
}
