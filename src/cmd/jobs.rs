//! Durable jobs from the command line: `mofa submit`, `mofa job` and `mofa dlq`.

use std::process::ExitCode;
use std::time::Duration;

use mofa_bus::{subjects, wire};

use super::connect::{Nats, NatsArgs};
use super::exec::json_input;

/// Submit a durable job: stored in the MOFA_JOBS stream until a worker serving PLUGIN has
/// run it and stored its result (retried on transient errors, dead-lettered after
/// jobs.max_deliver attempts). Prints {job, plugin, sequence, duplicate}; with --wait,
/// the result instead.
///
/// Exit status: 0 (with --wait: the job succeeded), 1 the job failed (its record is
/// printed), 2 no result within --timeout, or NATS/JetStream unreachable.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa submit discount '{\"price\": 100, \"customer_tier\": \"gold\"}' --wait\n  \
    mofa submit report '{\"month\": 11}' --id report-2026-11   # once per id\n  \
    mofa job report-2026-11")]
pub(crate) struct SubmitArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// Input as JSON (converted to MessagePack). Omitted: nil.
    pub(crate) input: Option<String>,
    /// Job id ([A-Za-z0-9_-], up to 128): a second submission with the same id within the
    /// dedup window is not run again. Generated if absent.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Wait for the job's result and print it.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Print a job's latest state as JSON: queued, retrying (with the last error), done (with
/// the output) or failed (with the error and its dead-letter sequence).
///
/// Exit status: 0 a state is stored, 1 none is (unknown id, or expired after
/// jobs.result_ttl_s), 2 NATS/JetStream unreachable.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa job report-2026-11\n  \
    mofa job report-2026-11 --wait 30s      # until it is done or failed")]
pub(crate) struct JobArgs {
    /// Job id.
    pub(crate) id: String,
    /// Wait up to this long for a final state (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) wait: Option<Duration>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// List dead-lettered jobs as JSON lines (oldest first), or submit them again with
/// --replay (same job id; each replayed one leaves the dead-letter stream).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa dlq                                # every dead letter\n  \
    mofa dlq report --replay                # run report's dead letters again\n  \
    mofa dlq --replay --seq 17              # only the one at sequence 17")]
pub(crate) struct DlqArgs {
    /// Plugin name; omitted: every plugin.
    pub(crate) plugin: Option<String>,
    /// Submit the listed dead letters again.
    #[arg(long)]
    pub(crate) replay: bool,
    /// Only the dead letter at this sequence (repeatable; see the list's "sequence").
    #[arg(long = "seq")]
    pub(crate) sequences: Vec<u64>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl SubmitArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let wait = self.wait.then_some(self.timeout);
        submit(
            &self.nats.resolve(),
            &self.plugin,
            self.input.as_deref(),
            self.id.as_deref(),
            wait,
        )
        .await
    }
}

impl JobArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        job(&self.nats.resolve(), &self.id, self.wait).await
    }
}

impl DlqArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        dlq(
            &self.nats.resolve(),
            self.plugin.as_deref(),
            self.replay,
            &self.sequences,
        )
        .await
    }
}

/// The jobs streams and results bucket.
async fn jobs(nats: &Nats) -> anyhow::Result<mofa_bus::jobs::Jobs> {
    let client = nats.connect("mofa").await?;
    Ok(mofa_bus::jobs::Jobs::open(client, &mofa_bus::jobs::JobsConfig::default()).await?)
}

/// A job record as JSON (its output converted like `mofa exec`'s).
fn job_json(record: &mofa_bus::jobs::JobResult) -> anyhow::Result<serde_json::Value> {
    let bytes = record.encode().map_err(anyhow::Error::msg)?;
    Ok(wire::to_json(&wire::decode(&bytes)?))
}

/// Prints `record`; the exit status says whether the job succeeded.
fn print_job(record: &mofa_bus::jobs::JobResult) -> anyhow::Result<ExitCode> {
    use mofa_bus::jobs::JobState;
    println!("{}", job_json(record)?);
    Ok(match record.state {
        JobState::Failed => ExitCode::from(1),
        JobState::Done => ExitCode::SUCCESS,
        JobState::Queued | JobState::Retrying => ExitCode::from(2),
    })
}

/// `mofa submit PLUGIN [JSON] [--id ID] [--wait]`.
async fn submit(
    nats: &Nats,
    plugin: &str,
    input: Option<&str>,
    id: Option<&str>,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let value = json_input(input)?;
    let jobs = jobs(nats).await?;
    let submitted = jobs.submit(plugin, &value, id).await?;
    if !jobs.consumed(plugin).await.unwrap_or(true) {
        eprintln!(
            "warning: no worker has consumed jobs of plugin {plugin:?} yet; job {} waits in the jobs stream until a worker serving {plugin:?} starts",
            submitted.job
        );
    }
    let Some(timeout) = wait else {
        println!("{}", serde_json::to_value(&submitted)?);
        return Ok(ExitCode::SUCCESS);
    };
    match jobs.wait_for(&submitted, timeout).await? {
        Some(record) if record.state.is_final() && record.sequence == Some(submitted.sequence) => {
            print_job(&record)
        }
        latest => {
            let state = latest.map_or("unknown".to_string(), |r| {
                format!("{:?}", r.state).to_lowercase()
            });
            eprintln!(
                "error: job {} has no result within {} (state: {state}); see `mofa job {}` later",
                submitted.job,
                humantime::format_duration(timeout),
                submitted.job
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// `mofa job ID [--wait D]`.
async fn job(nats: &Nats, id: &str, wait: Option<Duration>) -> anyhow::Result<ExitCode> {
    let jobs = jobs(nats).await?;
    let record = match wait {
        Some(timeout) => jobs.wait(id, timeout).await?,
        None => jobs.result(id).await?,
    };
    match record {
        Some(record) => {
            println!("{}", job_json(&record)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "error: no state stored for job {id:?}: still queued (a job has none until a worker finishes its first attempt), an unknown id, or a result older than jobs.result_ttl_s"
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `mofa dlq [PLUGIN] [--replay] [--seq N ...]`.
async fn dlq(
    nats: &Nats,
    plugin: Option<&str>,
    replay: bool,
    sequences: &[u64],
) -> anyhow::Result<ExitCode> {
    let jobs = jobs(nats).await?;
    let letters = jobs.dead_letters(plugin).await?;
    if let Some(missing) = sequences
        .iter()
        .find(|seq| !letters.iter().any(|l| l.sequence == **seq))
    {
        anyhow::bail!(
            "no dead letter at sequence {missing}{} (see `mofa dlq`)",
            plugin
                .map(|p| format!(" for plugin {p}"))
                .unwrap_or_default()
        );
    }
    let chosen = letters
        .into_iter()
        .filter(|letter| sequences.is_empty() || sequences.contains(&letter.sequence));
    for letter in chosen {
        if replay {
            let submitted = jobs.replay(letter.sequence).await?;
            println!(
                "{}",
                serde_json::json!({
                    "replayed": letter.sequence,
                    "job": submitted.job,
                    "plugin": submitted.plugin,
                    "sequence": submitted.sequence,
                })
            );
        } else {
            let mut json = serde_json::to_value(&letter)?;
            json["input"] = wire::to_json(&letter.input);
            println!("{json}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
