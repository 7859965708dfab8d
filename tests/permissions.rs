//! The least-privilege users of `deploy/nats/permissions.conf`, on a real nats-server run from
//! `deploy/nats/single.conf`: the normal flows work for each role (a worker serves and follows
//! the bucket, a client requests and submits jobs, a publisher publishes and rolls back, a
//! monitor watches), and what a role must not do is refused by the server: a client cannot
//! write the bucket or subscribe to `mofa.exec.>` (no impersonating a worker), a worker cannot
//! write the bucket, a monitor cannot call plugins.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use mofa_bus::wire::Value;

/// The shipped config reads the passwords from nats-server's environment.
const PASSWORDS: &[(&str, &str)] = &[
    ("MOFA_WORKER_PASSWORD", "worker-secret"),
    ("MOFA_CLIENT_PASSWORD", "client-secret"),
    ("MOFA_PUBLISHER_PASSWORD", "publisher-secret"),
    ("MOFA_MONITOR_PASSWORD", "monitor-secret"),
];

fn secure_server() -> NatsServer {
    NatsServer::start_deploy("single.conf", PASSWORDS, None, |text, _| text.to_string())
}

/// `--user ROLE --password ROLE-secret`.
fn role(name: &str) -> [String; 4] {
    [
        "--user".into(),
        name.into(),
        "--password".into(),
        format!("{name}-secret"),
    ]
}

/// Runs `mofa ARGS` as `user` against `server`.
fn mofa_as(user: &str, server: &NatsServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(args)
        .args(["--nats", &server.url()])
        .args(role(user))
        .output()
        .expect("mofa runs")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_job_and_nothing_it_must_not() {
    let server = secure_server();
    let sources = tempfile::tempdir().expect("temp dir");

    // Anonymous connections are refused.
    assert!(
        async_nats::connect(server.url()).await.is_err(),
        "no anonymous access"
    );

    // The publisher creates the buckets with its first publish.
    let v1 = script(
        sources.path(),
        "greet",
        r#"fn execute(input) { `hello, ${input}` }"#,
    );
    let out = mofa_as("publisher", &server, &["publish", &v1]);
    assert!(out.status.success(), "publisher publishes: {out:?}");

    // The worker: credentials from its config file's [nats] section.
    let plugins = plugins_dir(&[("local.rhai", "fn execute(input) { input }")]);
    let config = plugins.path().join("worker.toml");
    std::fs::write(
        &config,
        "[nats]\nuser = \"worker\"\npassword = \"worker-secret\"\n",
    )
    .expect("config written");
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
    // Nor answer the Services API.
    let _services = client.subscribe("$SRV.INFO").await.expect("subscribe sent");
    let refused = refusal(&mut client_errors).await;
    assert!(refused.contains("$srv.info"), "{refused}");

    // A client cannot write the bucket.
    let evil = script(sources.path(), "greet", r#"fn execute(input) { "pwned" }"#);
    let out = mofa_as("client", &server, &["publish", &evil]);
    assert!(!out.status.success(), "a client's publish fails: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("permissions violation"),
        "and says why: {stderr}"
    );
    let kv = jetstream::new(client.clone())
        .get_key_value("mofa_plugins")
        .await
        .expect("a client may read the bucket");
    assert!(
        kv.put("greet", "pwned".into()).await.is_err(),
        "nor with its own KV put"
    );

    // Nor can a worker: its user reads the bucket only.
    let (worker_client, _) = connect_as(&server, "worker").await;
    let kv = jetstream::new(worker_client)
        .get_key_value("mofa_plugins")
        .await
        .expect("a worker reads the bucket");
    assert!(
        kv.put("greet", "pwned".into()).await.is_err(),
        "a worker cannot write it"
    );
    assert_eq!(
        call(&client, "greet", Value::from("cy"))
            .await
            .expect_value(),
        Value::from("hello, cy"),
        "the published revision still serves"
    );

    // The publisher: a new revision reaches the worker, then a rollback.
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
    let out = mofa_as("publisher", &server, &["publish", &v2]);
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        call(&client, "greet", Value::from("di"))
            .await
            .expect_value(),
        Value::from("hi, di")
    );
    let out = mofa_as("publisher", &server, &["rollback", "greet"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        call(&client, "greet", Value::from("ed"))
            .await
            .expect_value(),
        Value::from("hello, ed")
    );

    // The monitor watches events and the fleet's stats, and cannot call a plugin.
    let out = mofa_as("monitor", &server, &["stats", "--json"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"greet\""),
        "{out:?}"
    );
    let mut events = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["events", "greet", "--nats", &server.url()])
        .args(role("monitor"))
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
async fn a_worker_that_may_not_create_the_bucket_follows_it_once_a_publisher_has() {
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
