//! A 3-node JetStream cluster from `deploy/nats/cluster.conf` (with its least-privilege users)
//! on loopback ports, three `mofa worker` processes spread over the nodes, and steady load
//! from a client; then one node is killed. Checked and reported:
//!
//! - requests recover within 5 s (the failures in the gap are counted and printed);
//! - the worker connected to the dead node reconnects to another one;
//! - a revision published after the failure reaches every live worker;
//! - the restarted node rejoins (the plugins bucket has its three replicas current again);
//! - publish → every worker serving it, p50 and p99 over 20 publishes on the cluster.
//!
//! Run with `--nocapture` to see the figures.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use mofa_bus::config::ReloadConfig;
use mofa_bus::distribution::{Distribution, INLINE_LIMIT};
use mofa_bus::wire::{self, Value};

const ENV: &[(&str, &str)] = &[
    ("MOFA_ADMIN_PASSWORD", "admin-secret"),
    ("MOFA_WORKER_PASSWORD", "worker-secret"),
    ("MOFA_CLIENT_PASSWORD", "client-secret"),
    ("MOFA_PUBLISHER_PASSWORD", "publisher-secret"),
    ("MOFA_MONITOR_PASSWORD", "monitor-secret"),
];
const NODES: [&str; 3] = ["nats-a", "nats-b", "nats-c"];

/// The shipped node config with the cluster on loopback `routes` ports; node `i` listens on
/// the `i`-th.
fn node(i: usize, routes: &[u16; 3]) -> NatsServer {
    let mut env = ENV.to_vec();
    env.push(("NATS_SERVER_NAME", NODES[i]));
    NatsServer::start_deploy("cluster.conf", &env, None, |text, _| {
        let mut text = text.replace(
            "listen: 0.0.0.0:6222",
            &format!("listen: 127.0.0.1:{}", routes[i]),
        );
        for (name, port) in NODES.iter().zip(routes) {
            text = text.replace(&format!("{name}:6222"), &format!("127.0.0.1:{port}"));
        }
        assert!(!text.contains(":6222"), "every route rewritten");
        text
    })
}

async fn connect_as(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-secret"))
        .connect(url)
        .await
        .expect("connects")
}

fn worker_on(
    url: &str,
    name: &str,
    config: &std::path::Path,
    plugins: &std::path::Path,
) -> WorkerProcess {
    WorkerCommand::new(url, plugins)
        .name(name)
        .config(config)
        .spawn()
}

/// The revision of `plugin` each answering worker serves, by worker id.
async fn serving(client: &async_nats::Client, plugin: &str) -> Vec<(String, String)> {
    mofa_bus::fleet::endpoints(
        client,
        &mofa_bus::subjects::Namespace::production(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_or_default()
    .into_iter()
    .filter(|e| e.plugin == plugin)
    .map(|e| {
        (
            e.worker,
            e.metadata.get("revision").cloned().unwrap_or_default(),
        )
    })
    .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_serving_when_a_node_dies() {
    let routes = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<NatsServer> = (0..3).map(|i| node(i, &routes)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();

    // The admin makes the buckets and the jobs streams with three replicas (what `mofa
    // setup --replicas 3` does) once the cluster has a leader; the publisher uses them.
    let admin = connect_as(&urls[1], "admin").await;
    let config = ReloadConfig {
        replicas: 3,
        ..ReloadConfig::default()
    };
    let started = Instant::now();
    loop {
        let jobs = mofa_bus::jobs::JobsConfig {
            replicas: 3,
            ..Default::default()
        };
        let made = match Distribution::provision(admin.clone(), &config).await {
            Ok(_) => mofa_bus::jobs::Jobs::provision(admin.clone(), &jobs)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the cluster's JetStream did not come up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let publisher = connect_as(&urls[1], "publisher").await;
    let distribution = loop {
        match Distribution::open(publisher.clone(), &config).await {
            Ok(d) => break d,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the cluster's JetStream did not come up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let sources = tempfile::tempdir().expect("temp dir");
    let file = sources.path().join("greet.rhai");
    let publish = |source: String| {
        let (distribution, file) = (&distribution, file.clone());
        async move {
            std::fs::write(&file, source).expect("written");
            let started = Instant::now();
            loop {
                match distribution.publish_file(&file, None, INLINE_LIMIT).await {
                    Ok((_, revision)) => return revision,
                    Err(e) => {
                        // A bucket whose leader just died answers once a new one is elected.
                        assert!(started.elapsed() < Duration::from_secs(30), "publish: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    };
    let v1 = publish("fn execute(input) { `v1 ${input}` }".into()).await;

    // Three workers, one per node, each given only its node's URL (the others are learned
    // from the cluster).
    let plugins = plugins_dir(&[]);
    let worker_config = plugins.path().join("worker.toml");
    std::fs::write(
        &worker_config,
        "[nats]\nuser = \"worker\"\npassword = \"worker-secret\"\n\n[reload]\nreplicas = 3\n",
    )
    .expect("config written");
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|i| {
            worker_on(
                &urls[i],
                &format!("worker-{i}"),
                &worker_config,
                plugins.path(),
            )
        })
        .collect();
    let client = connect_as(&urls[2], "client").await;
    let started = Instant::now();
    while serving(&client, "greet").await.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "three workers serve greet"
        );
    }
    let replicas = jetstream::new(publisher.clone())
        .get_stream("KV_mofa_plugins")
        .await
        .expect("the bucket's stream")
        .info()
        .await
        .expect("stream info")
        .config
        .num_replicas;
    assert_eq!(replicas, 3, "the bucket has three replicas");

    // Steady load from a client on a node that stays up: four requests in flight at all times.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, log) = (client.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = call_raw(
                        &client,
                        "greet",
                        wire::encode(&Value::from("x")),
                        Duration::from_secs(1),
                    )
                    .await
                    .is_ok();
                    log.lock().expect("log").push((Instant::now(), ok));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let answered = |after: Instant| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|(t, ok)| *ok && *t > after)
            .count()
    };
    // The load runs steadily before the kill.
    let warming = Instant::now();
    while answered(warming) < 200 {
        assert!(
            warming.elapsed() < Duration::from_secs(30),
            "the load never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Kill node A, the one worker-0 is connected to.
    let killed = Instant::now();
    nodes[0].kill();

    // worker-0 reconnects to a live node: it answers the Services API again.
    let mut reconnected = None;
    while reconnected.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "worker-0 reconnects"
        );
        let workers: HashSet<String> = serving(&client, "greet")
            .await
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        if workers.contains("worker-0") && killed.elapsed() > Duration::from_millis(500) {
            reconnected = Some(killed.elapsed());
        }
    }
    // The load runs on past the failure: 300 answers in a row after the last failed request
    // (a request sent to worker-0 just before the kill times out a second later, so failures
    // can trail the kill; counting from the kill could end the wait before they stop).
    let since_last_failure = || {
        let log = log.lock().expect("log");
        let last_failure = log
            .iter()
            .filter(|(t, ok)| !ok && *t > killed)
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(killed);
        log.iter()
            .filter(|(t, ok)| *ok && *t > last_failure)
            .count()
    };
    while since_last_failure() < 300 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "requests after the kill: {} answered, {} since the last failure",
            answered(killed),
            since_last_failure()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A revision published after the failure reaches every live worker.
    let v2 = publish("fn execute(input) { `v2 ${input}` }".into()).await;
    assert!(v2 > v1);
    let published = Instant::now();
    loop {
        let now = serving(&client, "greet").await;
        if now.len() == 3 && now.iter().all(|(_, r)| *r == v2.to_string()) {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(30),
            "every live worker serves revision {v2}: {now:?}"
        );
    }
    let converged_after_failure = published.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let log = log.lock().expect("log").clone();
    let failures: Vec<Instant> = log.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).collect();
    let after_kill = log.iter().filter(|(t, _)| *t > killed).count();
    let last_failure = failures
        .iter()
        .max()
        .map(|t| t.saturating_duration_since(killed));
    let recovered = last_failure.unwrap_or_default();
    let gap = match last_failure {
        Some(after) => format!("the last failure {after:?} after the kill"),
        None => "no failure".to_string(),
    };
    assert!(
        recovered < Duration::from_secs(5),
        "requests recover within 5 s of the node's death: the last failure came {recovered:?} after it"
    );
    assert!(
        log.iter()
            .filter(|(t, ok)| *ok && *t > killed + recovered)
            .count()
            > 100,
        "and keep succeeding"
    );

    // The node comes back and rejoins: the bucket's three replicas are current again.
    nodes[0].start_again();
    let restarted = Instant::now();
    let js = jetstream::new(publisher.clone());
    let rejoined = loop {
        let info = js.get_stream("KV_mofa_plugins").await.ok();
        let cluster = match info {
            Some(mut stream) => stream.info().await.ok().and_then(|i| i.cluster.clone()),
            None => None,
        };
        if let Some(cluster) = cluster {
            let mut peers: Vec<String> = cluster
                .replicas
                .iter()
                .filter(|r| r.current)
                .map(|r| r.name.clone())
                .collect();
            peers.extend(cluster.leader.clone());
            if peers.len() == 3 && peers.iter().any(|p| p == "nats-a") {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "nats-a rejoins the bucket's replicas"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Publish → every worker serving it, on the healed cluster.
    let mut reloads = client
        .subscribe("mofa.events.reload.greet")
        .await
        .expect("subscribed");
    client.flush().await.expect("flushed");
    let mut times = Vec::new();
    for n in 3..23 {
        let sent = Instant::now();
        let revision = publish(format!("fn execute(input) {{ `v{n} ${{input}}` }}")).await;
        let mut done = HashSet::new();
        while done.len() < 3 {
            let message = tokio::time::timeout(Duration::from_secs(20), reloads.next())
                .await
                .expect("reload events")
                .expect("open");
            let event = wire::to_json(&wire::decode(&message.payload).expect("MessagePack"));
            if event["status"] == "completed" && event["revision"] == revision {
                done.insert(event["worker"].as_str().unwrap_or_default().to_string());
            }
        }
        times.push(sent.elapsed());
    }
    times.sort();
    eprintln!(
        "cluster failover: {} requests after the kill, {} failed, {}; \
         worker-0 reconnected after {:?}; a publish after the failure converged on 3 workers in {:?}; \
         nats-a rejoined after {:?}; publish -> 3 workers serving (20 publishes): p50 {:?}, p99 {:?}",
        after_kill,
        failures.len(),
        gap,
        reconnected.unwrap_or_default(),
        converged_after_failure,
        rejoined,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
    );
}
