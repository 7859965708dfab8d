//! What both benchmarks measure against and with: the bare async-nats echo responder (the
//! baseline every ratio is taken against), the benchmark binary re-run as a helper process in
//! a role, the Python baseline's cached venv, and a process's CPU time from /proc.
#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use futures::StreamExt;

/// The variable that runs the benchmark binary as a helper process instead of the benchmark.
pub const ROLE_ENV: &str = "MOFA_BENCH_ROLE";

/// The NATS URL a helper process connects to.
pub const URL_ENV: &str = "MOFA_BENCH_URL";

/// The subject the bare echo responder serves.
pub const BARE_SUBJECT: &str = "bench.bare.echo";

/// The role of the bare echo responder.
pub const BARE_ROLE: &str = "bare-echo";

/// The baseline: the smallest useful async-nats responder, echoing every request. Prints
/// `ready` once subscribed.
pub async fn bare_echo(url: &str) {
    let client = async_nats::connect(url)
        .await
        .expect("bare responder connects");
    let mut sub = client
        .queue_subscribe(BARE_SUBJECT, "bare".into())
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    println!("ready");
    while let Some(m) = sub.next().await {
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, m.payload).await;
        }
    }
}

/// Runs the bare echo responder on a current-thread runtime, the cheapest way to run one
/// async-nats client (no wake-ups between threads): the baseline is the best a responder does.
pub fn run_bare_echo(url: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bare_echo(url));
}

/// Runs this benchmark binary again as `role` with `url` (and `envs`), once it prints `ready`.
pub fn spawn_role(role: &str, url: &str, envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .env(ROLE_ENV, role)
        .env(URL_ENV, url)
        .stdout(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let child = command.spawn().expect("helper process starts");
    wait_ready(child, role)
}

/// Waits for `child`'s first line, which must be `ready`.
pub fn wait_ready(mut child: Child, what: &str) -> Child {
    let out = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "{what} did not start");
    child
}

/// The Python baseline's interpreter: the Python client example's cached venv (nats-py and
/// msgpack, from `examples/python/requirements.txt`), made on first use.
pub fn python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/python/requirements.txt"))
        .expect("requirements.txt");
    let venv = mofa_bus::pyvenv::Venv::for_requirements("py-client", &text);
    if let Err(e) = venv.ensure() {
        panic!("the Python baseline needs nats-py and msgpack: {e}");
    }
    venv.bin("python")
}

/// CPU time (user + system) of every thread of `pid`, from /proc/<pid>/task/*/schedstat (ns).
pub fn cpu_ns(pid: u32) -> u64 {
    threads_cpu_ns(pid, |_| true)
}

/// CPU time of the sandbox pool's threads of worker `pid` (ns): where sandboxed calls ran
/// that did not run inline.
pub fn sandbox_cpu_ns(pid: u32) -> u64 {
    threads_cpu_ns(pid, |name| {
        name.starts_with(mofa_bus::plugin::SANDBOX_THREAD_PREFIX)
    })
}

/// CPU time of the threads of `pid` whose name (/proc/<pid>/task/*/comm) passes `keep` (ns).
fn threads_cpu_ns(pid: u32, keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|name| keep(name.trim_end()))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// Context switches (voluntary + involuntary) of every thread of `pid` so far, from
/// /proc/<pid>/task/*/status: each one is a thread going to sleep or being preempted, so
/// their number per request shows how many thread hand-offs a request costs.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}
