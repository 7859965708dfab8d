//! The fleet views: `mofa plugins`, `stats` and `tools` (the Services API of every live
//! worker) and `mofa ping` (is a worker up; `--self` finds this host's worker by the id file
//! it keeps in its data directory).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mofa_bus::config::WorkerConfig;
use mofa_bus::subjects;

use super::connect::{Nats, NatsArgs};

/// How a fleet view collects and prints the workers' answers.
#[derive(clap::Args, Debug)]
pub(crate) struct Collect {
    /// How long to collect answers from workers.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) wait: Duration,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// List the plugins every live worker serves, with kind and revision (Services API INFO).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa plugins\n  \
    mofa plugins --json --wait 2s")]
pub(crate) struct PluginsArgs {
    #[command(flatten)]
    pub(crate) collect: Collect,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Per-plugin counts summed over every live worker (Services API STATS): workers,
/// requests, errors by code, refusals, mean time, and reload outcomes with the reload
/// success rate (completed / (completed + failed)).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa stats\n  \
    mofa stats --json")]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pub(crate) collect: Collect,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Ask workers whether they are up (Services API PING): this host's worker (--self), one
/// worker by id, or any.
///
/// --self takes $MOFA_WORKER_ID when set, else the one running worker that recorded its
/// id in the data directory (several: name one). Exit status: 0 an answer came within
/// --timeout (printed as JSON), 1 none did, 2 NATS is unreachable. For health checks and
/// Kubernetes probes.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa ping                               # any worker\n  \
    mofa ping w1 --timeout 1s\n  \
    mofa ping --self                        # a container's health check")]
pub(crate) struct PingArgs {
    /// Worker id; omitted: any worker.
    pub(crate) worker: Option<String>,
    /// This host's worker: $MOFA_WORKER_ID, else the worker recorded in the data directory.
    #[arg(long = "self", conflicts_with = "worker")]
    pub(crate) this: bool,
    /// Data directory of --self [default: the worker's default data directory].
    #[arg(long, env = "MOFA_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// How long to wait for an answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// List the tools the live fleet serves, as JSON in the function-calling shape of an LLM API.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa tools --format openai\n  \
    mofa tools --format anthropic")]
pub(crate) struct ToolsArgs {
    /// openai: {type, function: {name, description, parameters}}; anthropic: {name,
    /// description, input_schema}; mcp: {name, description, inputSchema}; json: {name,
    /// description, parameters}.
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) format: mofa_bus::fleet::ToolFormat,
    /// How long to collect answers from workers.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) wait: Duration,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl PluginsArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        plugins(&self.nats.resolve(), self.collect.wait, self.collect.json).await
    }
}

impl StatsArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        stats(&self.nats.resolve(), self.collect.wait, self.collect.json).await
    }
}

impl PingArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let nats = self.nats.resolve();
        let options = PingOptions {
            worker: self.worker,
            this: self.this,
            data_dir: self.data_dir,
            timeout: self.timeout,
        };
        ping(&nats, options).await
    }
}

impl ToolsArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        tools(&self.nats.resolve(), self.format, self.wait).await
    }
}

/// `mofa plugins`: what every live worker serves (Services API INFO).
pub(crate) async fn plugins(nats: &Nats, wait: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let rows: Vec<serde_json::Value> =
        mofa_bus::fleet::endpoints(&client, &nats.namespace()?, wait)
            .await
            .map_err(|e| anyhow::anyhow!("$SRV.INFO: {e}"))?
            .into_iter()
            .map(|e| {
                let meta = |k: &str| e.metadata.get(k).cloned().unwrap_or_default();
                serde_json::json!({
                    "worker": e.worker,
                    "plugin": e.plugin,
                    "kind": meta("kind"),
                    "revision": meta("revision"),
                    "version": meta("version"),
                    "sha256": meta("sha256"),
                    "canary_revision": meta("canary_revision"),
                    "canary_percent": meta("canary_percent"),
                })
            })
            .collect();
    if json {
        for row in &rows {
            println!("{row}");
        }
    } else {
        println!(
            "{:<24} {:<7} {:>8} {:<14} {:<14} {:<18} WORKER",
            "PLUGIN", "KIND", "REVISION", "VERSION", "SHA256", "CANARY"
        );
        for r in &rows {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            let sha = text("sha256");
            let canary = match text("canary_revision").as_str() {
                "" => "-".to_string(),
                revision => format!("{revision} ({}%)", text("canary_percent")),
            };
            println!(
                "{:<24} {:<7} {:>8} {:<14} {:<14} {:<18} {}",
                text("plugin"),
                text("kind"),
                if text("revision").is_empty() {
                    "-".to_string()
                } else {
                    text("revision")
                },
                text("version"),
                if sha.is_empty() {
                    "-".to_string()
                } else {
                    sha[..sha.len().min(12)].to_string()
                },
                canary,
                text("worker")
            );
        }
    }
    Ok(answered(!rows.is_empty(), wait))
}

/// Where `mofa worker` records its id for `mofa ping --self`: one file per worker under its
/// data directory, named by the worker id and holding its process id.
const WORKER_IDS_DIR: &str = "workers";

/// A worker's id file, removed when the worker exits.
pub(crate) struct WorkerIdFile {
    path: Option<PathBuf>,
}

impl WorkerIdFile {
    /// Records worker `id` (this process) under `data_dir`; a failure is logged, not fatal.
    pub(crate) fn record(data_dir: &Path, id: &str) -> WorkerIdFile {
        let dir = data_dir.join(WORKER_IDS_DIR);
        let path = dir.join(id);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, std::process::id().to_string()));
        match written {
            Ok(()) => WorkerIdFile { path: Some(path) },
            Err(e) => {
                tracing::warn!(
                    "cannot record the worker id in {}: {e}; `mofa ping --self` will not find this worker",
                    path.display()
                );
                WorkerIdFile { path: None }
            }
        }
    }
}

impl Drop for WorkerIdFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The id of "this" worker for `--self`: `$MOFA_WORKER_ID` (the worker's `--name`) when set,
/// else the one running worker recorded under `data_dir`; with none running, the one recorded
/// last (a killed worker leaves its record: the ping then says it did not answer). Several
/// running, or none recorded: an error that says what to do.
fn self_id(data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = std::env::var("MOFA_WORKER_ID")
        .ok()
        .filter(|id| !id.is_empty())
    {
        return Ok(id);
    }
    let dir = data_dir.join(WORKER_IDS_DIR);
    // (id, running, last written)
    let mut recorded: Vec<(String, bool, std::time::SystemTime)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let id = entry.file_name().to_str()?.to_string();
            let running = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(process_alive);
            let written = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some((id, running, written))
        })
        .collect();
    recorded.sort();
    let running: Vec<&str> = recorded
        .iter()
        .filter(|(_, running, _)| *running)
        .map(|(id, _, _)| id.as_str())
        .collect();
    match running.as_slice() {
        [one] => Ok(one.to_string()),
        [] => recorded
            .iter()
            .max_by_key(|(_, _, written)| *written)
            .map(|(id, _, _)| id.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no worker recorded its id in {} (start one with this data directory, or give --data-dir / $MOFA_DATA_DIR of the worker to check)",
                    dir.display()
                )
            }),
        several => anyhow::bail!(
            "{} running workers record their ids in {} ({}): name one (`mofa ping ID`), set $MOFA_WORKER_ID, or give each worker its own --data-dir",
            several.len(),
            dir.display(),
            several.join(", ")
        ),
    }
}

/// Whether process `pid` runs (on Linux, by /proc; elsewhere assumed).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// `mofa ping`'s choices.
pub(crate) struct PingOptions {
    /// A worker id, or any worker.
    pub(crate) worker: Option<String>,
    /// `--self`.
    pub(crate) this: bool,
    /// The data directory `--self` looks in.
    pub(crate) data_dir: Option<PathBuf>,
    /// How long to wait.
    pub(crate) timeout: Duration,
}

/// `mofa ping`: exit 0 with the answer, 1 when no worker answered (said plainly).
pub(crate) async fn ping(nats: &Nats, options: PingOptions) -> anyhow::Result<ExitCode> {
    let worker = if options.this {
        let dir = WorkerConfig {
            data_dir: options.data_dir.unwrap_or_default(),
            ..WorkerConfig::default()
        }
        .data_dir();
        Some(self_id(&dir)?)
    } else {
        options.worker
    };
    let service = nats.namespace()?.service_name().to_string();
    let subject = match &worker {
        Some(id) => {
            subjects::validate_name(id)?;
            format!("$SRV.PING.{service}.{id}")
        }
        None => format!("$SRV.PING.{service}"),
    };
    let client = nats.connect("mofa ping").await?;
    let request = async_nats::Request::new().timeout(Some(options.timeout));
    match client.send_request(subject.clone(), request).await {
        Ok(reply) => {
            println!("{}", String::from_utf8_lossy(&reply.payload));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let server = nats.shown();
            let message = match (e.kind(), &worker) {
                (async_nats::RequestErrorKind::NoResponders, Some(id)) => format!(
                    "worker {id} did not answer: no worker with that id serves {service} on {server} (`mofa ping` without an id asks any)"
                ),
                (async_nats::RequestErrorKind::NoResponders, None) => {
                    format!("no worker answered: none serves {service} on {server}")
                }
                (async_nats::RequestErrorKind::TimedOut, _) => format!(
                    "{} did not answer within {} on {server}",
                    worker.as_deref().map_or("no worker".to_string(), |id| format!("worker {id}")),
                    humantime::format_duration(options.timeout)
                ),
                _ => format!(
                    "$SRV.PING on {server} failed: {}",
                    mofa_bus::connection::cause(&e)
                ),
            };
            eprintln!("{message}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `mofa stats`: per-plugin counts over every live worker (Services API STATS).
pub(crate) async fn stats(nats: &Nats, wait: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let rows = mofa_bus::fleet::stats(&client, &nats.namespace()?, wait)
        .await
        .map_err(|e| anyhow::anyhow!("$SRV.STATS: {e}"))?;
    if json {
        for row in &rows {
            let mut line = serde_json::to_value(row)?;
            line["reload_success_rate"] = serde_json::json!(row.reload_success_rate());
            println!("{line}");
        }
    } else {
        println!(
            "{:<24} {:>7} {:>10} {:>8} {:>8} {:>9}  {:<18} {:>8} {:>6} {:>7} {:>8}",
            "PLUGIN",
            "WORKERS",
            "REQUESTS",
            "ERRORS",
            "REFUSED",
            "MEAN µs",
            "BY CODE",
            "RELOADED",
            "FAILED",
            "ROLLBK",
            "SUCCESS"
        );
        for r in &rows {
            let codes = r
                .errors_by_code
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect::<Vec<_>>()
                .join(",");
            println!(
                "{:<24} {:>7} {:>10} {:>8} {:>8} {:>9}  {:<18} {:>8} {:>6} {:>7} {:>8}",
                r.plugin,
                r.workers,
                r.requests,
                r.errors,
                r.refused,
                r.average_us,
                if codes.is_empty() {
                    "-".to_string()
                } else {
                    codes
                },
                r.reloads_completed,
                r.reloads_failed,
                r.reloads_rolled_back,
                r.reload_success_rate()
                    .map_or("-".to_string(), |rate| format!("{:.1}%", rate * 100.0)),
            );
        }
    }
    Ok(answered(!rows.is_empty(), wait))
}

/// `mofa tools`: the live fleet's tools in an LLM API's shape.
pub(crate) async fn tools(
    nats: &Nats,
    format: mofa_bus::fleet::ToolFormat,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let endpoints = mofa_bus::fleet::endpoints(&client, &nats.namespace()?, wait)
        .await
        .map_err(|e| anyhow::anyhow!("$SRV.INFO: {e}"))?;
    let tools = mofa_bus::fleet::tools(&endpoints);
    println!(
        "{}",
        serde_json::to_string_pretty(&mofa_bus::fleet::render(&tools, format))?
    );
    Ok(answered(!endpoints.is_empty(), wait))
}

/// Exit 0 when some worker answered a fleet query, else 2 with a note on stderr.
fn answered(any: bool, wait: Duration) -> ExitCode {
    if any {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "no worker answered within {}",
        humantime::format_duration(wait)
    );
    ExitCode::from(2)
}
