//! Every file under `deploy/` is checked by something that can fail:
//!
//! - the systemd unit by `systemd-analyze verify` (when the machine has systemd) and for its
//!   hardening, its stop timeout against the drain timeout and its restart policy;
//! - the Kubernetes manifests against the Kubernetes schemas (`kubernetes-validate --strict`,
//!   from PyPI), and for probes on `mofa ping`, the grace period, preStop and the HPA's target;
//!   the ConfigMap's worker.toml is loaded as a worker config;
//! - compose.yaml for three NATS nodes on the shipped cluster config and three workers, all
//!   with health checks; the Dockerfile for its stages, its non-root user and that everything
//!   it copies exists;
//! - `mofa ping --self`, which the health checks and probes run, against a real worker.
//!
//! (The NATS configs are run by tests/permissions.rs and tests/cluster.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use mofa_bus::config::WorkerConfig;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy().join(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// The default drain timeout, in seconds: every stop timeout must be longer.
fn drain_s() -> u64 {
    WorkerConfig::default().drain_timeout_ms / 1000
}

/// The venv's python with the deploy tests' pinned packages.
fn python() -> PathBuf {
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/deploy");
    python_venv(
        "deploy-test",
        &support.join("requirements.txt"),
        "the deploy tests",
    )
}

/// The YAML documents of `deploy/<path>` as JSON.
fn yaml(path: &str) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/deploy/yaml_to_json.py");
    let out = Command::new(python())
        .arg(script)
        .arg(deploy().join(path))
        .output()
        .expect("python runs");
    assert!(out.status.success(), "deploy/{path} is not YAML: {out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `key=value` lines of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_is_hardened_stops_after_the_drain_and_verifies() {
    let text = read("systemd/mofa-worker.service");
    let settings = unit_settings(&text);
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the unit sets {key}"))
    };
    assert!(
        get("DynamicUser") == "yes"
            || settings
                .iter()
                .any(|(k, v)| k == "User" && v != "root" && v != "0"),
        "not root"
    );
    assert_eq!(get("ProtectSystem"), "strict", "read-only file system");
    assert_eq!(get("NoNewPrivileges"), "yes");
    assert_eq!(get("Restart"), "on-failure");
    let exec: Vec<&str> = get("ExecStart").split_whitespace().collect();
    let data_dir = exec
        .windows(2)
        .find(|w| w[0] == "--data-dir")
        .map(|w| w[1])
        .expect("ExecStart names the data dir");
    assert!(
        get("ReadWritePaths")
            .split_whitespace()
            .any(|p| p == data_dir),
        "the data dir {data_dir} is the one writable path"
    );
    assert_eq!(format!("/var/lib/{}", get("StateDirectory")), data_dir);
    let stop: u64 = get("TimeoutStopSec").parse().expect("seconds");
    assert!(
        stop > drain_s(),
        "TimeoutStopSec {stop} s > drain_timeout_ms {} s",
        drain_s()
    );
    assert_eq!(get("KillSignal"), "SIGTERM");

    // The flags ExecStart passes are the worker's: clap rejects unknown ones.
    let help = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["worker", "--help"])
        .output()
        .expect("mofa runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "mofa worker has {flag}");
    }

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => {
            // Verified as shipped, with ExecStart pointing at the binary just built (verify
            // requires the command to exist).
            let dir = tempfile::tempdir().expect("temp dir");
            let unit = dir.path().join("mofa-worker.service");
            std::fs::write(
                &unit,
                text.replace("/usr/local/bin/mofa", env!("CARGO_BIN_EXE_mofa")),
            )
            .expect("unit copied");
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&unit)
                .output()
                .expect("systemd-analyze runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "systemd-analyze verify: {stderr}");
            assert!(
                !stderr.contains("mofa-worker.service:"),
                "no warning about the unit: {stderr}"
            );
        }
        _ => eprintln!("note: systemd-analyze is not installed (Debian: apt install systemd); checked the unit's settings only"),
    }
}

#[test]
fn the_kubernetes_manifests_match_the_schemas_and_the_fleet_contract() {
    let files: Vec<PathBuf> = ["configmap.yaml", "deployment.yaml", "hpa.yaml"]
        .iter()
        .map(|f| deploy().join("k8s").join(f))
        .collect();
    let python = python();
    let validate = python.with_file_name("kubernetes-validate");
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    assert!(
        out.status.success(),
        "kubernetes-validate --strict: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let config_map = &yaml("k8s/configmap.yaml")[0];
    let toml = config_map["data"]["worker.toml"]
        .as_str()
        .expect("worker.toml");
    let config = WorkerConfig::from_toml(toml).expect("the ConfigMap holds a valid worker config");
    config.validate().expect("and a usable one");
    assert_eq!(
        config.reload.replicas, 3,
        "buckets replicated on the cluster"
    );

    let deployment = &yaml("k8s/deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        grace * 1000 > config.drain_timeout_ms,
        "terminationGracePeriodSeconds {grace} s > drain_timeout_ms {} ms",
        config.drain_timeout_ms
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["exec"]["command"],
            serde_json::json!(["mofa", "ping", "--self"]),
            "{probe} asks $SRV.PING"
        );
    }
    assert!(
        container["lifecycle"]["preStop"].is_object(),
        "a preStop hook"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let env = container["env"].as_array().expect("env");
    let data_dir = env
        .iter()
        .find(|e| e["name"] == "MOFA_DATA_DIR")
        .and_then(|e| e["value"].as_str())
        .expect("MOFA_DATA_DIR");
    assert!(
        mounts.iter().any(|m| m["mountPath"] == data_dir),
        "the data dir (where --self finds the id) is a writable volume"
    );
    assert!(
        env.iter().any(|e| e["name"] == "MOFA_WORKER_ID"),
        "the pod name is the worker id"
    );
    let hpa = &yaml("k8s/hpa.yaml")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
}

#[test]
fn compose_runs_three_nats_nodes_and_three_workers_with_health_checks() {
    let compose = &yaml("compose.yaml")[0];
    let services = compose["services"].as_object().expect("services");
    let nats: Vec<_> = services
        .iter()
        .filter(|(n, _)| n.starts_with("nats-"))
        .collect();
    let workers: Vec<_> = services
        .iter()
        .filter(|(n, _)| n.starts_with("worker-"))
        .collect();
    assert_eq!(nats.len(), 3);
    assert_eq!(workers.len(), 3);
    for (name, node) in &nats {
        assert_eq!(
            node["command"],
            serde_json::json!(["-c", "/etc/nats/cluster.conf"])
        );
        assert_eq!(node["environment"]["NATS_SERVER_NAME"], name.as_str());
        assert!(
            node["healthcheck"]["test"].is_array(),
            "{name} has a health check"
        );
        // The routes of cluster.conf name the compose services.
        assert!(read("nats/cluster.conf").contains(&format!("nats-route://{name}:6222")));
    }
    let config = WorkerConfig::from_toml(&read("worker.toml")).expect("deploy/worker.toml");
    for (name, worker) in &workers {
        assert_eq!(
            worker["healthcheck"]["test"],
            serde_json::json!(["CMD", "mofa", "ping", "--self"]),
            "{name}"
        );
        let grace = humantime::parse_duration(worker["stop_grace_period"].as_str().expect("grace"))
            .expect("a duration");
        assert!(
            grace.as_millis() > u128::from(config.drain_timeout_ms),
            "{name}'s stop grace"
        );
        assert_eq!(worker["environment"]["MOFA_NATS_USER"], "worker");
        assert_eq!(worker["build"]["dockerfile"], "deploy/docker/Dockerfile");
        // Workers start once `mofa setup` has made the streams.
        assert_eq!(
            worker["depends_on"]["setup"]["condition"],
            "service_completed_successfully"
        );
    }
    let setup = &services["setup"];
    assert_eq!(setup["command"][0], "setup", "{setup}");
    assert_eq!(setup["environment"]["MOFA_NATS_USER"], "admin");
    assert!(
        setup["command"]
            .to_string()
            .contains("\"--replicas\",\"3\""),
        "{setup}"
    );
    assert_eq!(config.reload.replicas, 3);
}

#[test]
fn the_dockerfile_builds_in_stages_runs_as_non_root_and_copies_what_exists() {
    let text = read("docker/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    let user = lines[last_from..]
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "non-root: {user}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("nats-server")),
        "nats-server is not inside"
    );
    assert!(
        text.contains(r#"CMD ["mofa", "ping", "--self"]"#),
        "health check on $SRV.PING"
    );
    // Every COPY from the build context (the repository) names something that exists.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            let found = if source.contains('*') {
                let (dir, pattern) = source.rsplit_once('/').unwrap_or((".", source));
                let suffix = pattern.trim_start_matches('*');
                std::fs::read_dir(root.join(dir))
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    })
                    .unwrap_or(false)
            } else {
                root.join(source).exists()
            };
            assert!(
                found,
                "the Dockerfile copies {source}, which the repository has"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mofa_ping_self_answers_while_the_worker_runs() {
    let server = NatsServer::start();
    let plugins = plugins_dir(&[]);
    let data = tempfile::tempdir().expect("temp dir");
    let ping = || {
        Command::new(env!("CARGO_BIN_EXE_mofa"))
            .args(["ping", "--self", "--timeout", "1s", "--nats", &server.url()])
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("mofa ping runs")
    };
    let before = ping();
    assert_eq!(
        before.status.code(),
        Some(2),
        "no id recorded yet: {before:?}"
    );
    let mut worker = Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args([
            "worker",
            "--name",
            "pinged",
            "--nats",
            &server.url(),
            "--plugins",
        ])
        .arg(plugins.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("worker starts");
    let client = server.client().await;
    wait_for_plugin(&client, "echo", mofa_bus::wire::Value::from(1)).await;
    let mut answered = ping();
    for _ in 0..50 {
        if answered.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answered = ping();
    }
    assert!(answered.status.success(), "{answered:?}");
    let pong: serde_json::Value = serde_json::from_slice(&answered.stdout).expect("JSON");
    assert_eq!(pong["id"], "pinged");
    let _ = worker.kill();
    let _ = worker.wait();
    let after = ping();
    assert_eq!(
        after.status.code(),
        Some(1),
        "a dead worker does not answer: {after:?}"
    );
}
