//! Rollouts: `mofa publish` (test cases first, optionally as a canary), `mofa promote` (a
//! canary to the only revision, or a revision from one environment to another) and
//! `mofa canary` (the canary against its stable revision, live).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use mofa_bus::config::{ReloadConfig, WorkerConfig};
use mofa_bus::distribution::{Canary, Distribution, TestsRun, INLINE_LIMIT};
use mofa_bus::revisions::Comparison;
use mofa_bus::subjects;
use mofa_bus::wire::ResultEvent;

use super::local::{self, Checked};
use crate::{BucketArgs, Nats};

/// `mofa publish`'s choices beside the files and the bucket.
#[derive(clap::Args, Debug)]
pub(crate) struct PublishOptions {
    /// Version label stored with the revision (default: the first 12 hex digits of its
    /// SHA-256).
    #[arg(long)]
    version: Option<String>,
    /// Publish as a canary: beside the revision serving now, answering this percent of
    /// the requests (by the hash of a request's Mofa-Route-Key header, else at random),
    /// until `mofa promote` or `mofa rollback`.
    #[arg(long, value_name = "PERCENT")]
    canary: Option<f64>,
    /// With --canary: a worker drops the canary once its error rate there exceeds this
    /// percent, announced as a rolled_back reload event.
    #[arg(long, value_name = "PERCENT", requires = "canary")]
    max_error_rate: Option<f64>,
    /// With --max-error-rate: requests the canary answers on a worker before its error
    /// rate counts.
    #[arg(long, default_value_t = 20, requires = "max_error_rate")]
    min_requests: u64,
    /// Publish without running the plugin's test cases (FILE.test.toml); the record says
    /// it was not tested.
    #[arg(long)]
    no_test: bool,
    /// The worker configuration whose limits the test cases run under.
    #[arg(long, env = "MOFA_CONFIG")]
    config: Option<PathBuf>,
}

impl PublishOptions {
    /// The canary these options ask for (its stable revision is filled in by the bucket).
    fn canary(&self) -> anyhow::Result<Option<Canary>> {
        let Some(percent) = self.canary else {
            return Ok(None);
        };
        let canary = Canary {
            percent,
            stable: 0,
            max_error_rate: self.max_error_rate.map(|rate| rate / 100.0),
            min_requests: self.min_requests,
        };
        canary.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(canary))
    }
}

/// `mofa publish`: every file's test cases run first; if any fails, nothing is published.
pub(crate) async fn publish(
    bucket: BucketArgs,
    files: &[PathBuf],
    options: PublishOptions,
) -> anyhow::Result<ExitCode> {
    let canary = options.canary()?;
    let mut tested = Vec::with_capacity(files.len());
    if options.no_test {
        tested.resize(
            files.len(),
            Some(TestsRun {
                passed: 0,
                skipped: true,
            }),
        );
    } else {
        let config = match &options.config {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        let mut failed = Vec::new();
        for file in files {
            match local::check(file, &config, &mut std::io::stderr()).await {
                Checked::NoCases => {
                    eprintln!(
                        "warning: {} has no test cases (write {}); publishing it untested",
                        file.display(),
                        mofa_bus::kinds::case_file_for(file).display()
                    );
                    tested.push(None);
                }
                Checked::Passed(passed) => tested.push(Some(TestsRun {
                    passed,
                    skipped: false,
                })),
                Checked::Failed => failed.push(file.display().to_string()),
            }
        }
        if !failed.is_empty() {
            eprintln!(
                "error: nothing published: test cases failed for {} (fix the plugin or its cases, or publish with --no-test)",
                failed.join(", ")
            );
            return Ok(ExitCode::from(1));
        }
    }
    let distribution = bucket.open().await?;
    let env = in_env(&distribution);
    for (file, tests) in files.iter().zip(tested) {
        let (name, mut record) = distribution
            .record_for_file(file, options.version.as_deref(), INLINE_LIMIT)
            .await?;
        record.tests = tests;
        match &canary {
            None => {
                let revision = distribution.put(&name, &record).await?;
                println!("published {name} as revision {revision}{env}");
            }
            Some(canary) => {
                let (revision, stable) = distribution
                    .publish_canary(&name, record, canary.clone())
                    .await?;
                println!(
                    "published {name} as revision {revision}{env}, a {}% canary beside revision {stable}",
                    canary.percent
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// ` in ENV` outside production, for messages.
fn in_env(distribution: &Distribution) -> String {
    if distribution.env() == mofa_bus::config::PRODUCTION {
        String::new()
    } else {
        format!(" in {}", distribution.env())
    }
}

/// The plugins bucket of `env` on `client`.
async fn bucket_of(client: &async_nats::Client, env: &str) -> anyhow::Result<Distribution> {
    let config = ReloadConfig::default().in_env(env)?;
    Ok(Distribution::open(client.clone(), &config).await?)
}

/// `mofa promote`.
pub(crate) async fn promote(
    nats: &Nats,
    plugin: &str,
    from_to: Option<(String, String)>,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let client = nats.connect("mofa").await?;
    match from_to {
        None => {
            let distribution = bucket_of(&client, &nats.env).await?;
            let (revision, canary) = distribution.promote_canary(plugin).await?;
            println!(
                "promoted {plugin}'s canary (revision {canary}) as revision {revision}{}; it serves every request",
                in_env(&distribution)
            );
        }
        Some((from, to)) => {
            if from == to {
                anyhow::bail!("--from and --to are both {from}: name two environments");
            }
            let source = bucket_of(&client, &from).await?;
            let target = bucket_of(&client, &to).await?;
            let (revision, copied) = target.promote_from(&source, plugin).await?;
            println!(
                "promoted {plugin} revision {copied} of {from} to {to} as revision {revision}"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mofa canary`: what the bucket says, then the result events of `watch_for`, by revision.
pub(crate) async fn canary(
    nats: &Nats,
    plugin: &str,
    watch_for: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let namespace = nats.namespace()?;
    let client = nats.connect("mofa").await?;
    let distribution = bucket_of(&client, &nats.env).await?;
    match distribution.current(plugin).await? {
        Some((revision, record)) => match &record.canary {
            Some(canary) => eprintln!(
                "{plugin}{}: canary revision {revision} answers {}% beside stable revision {}{}",
                in_env(&distribution),
                canary.percent,
                canary.stable,
                canary
                    .max_error_rate
                    .map(|rate| format!(
                        "; dropped on a worker past {:.1}% errors over {} requests",
                        rate * 100.0,
                        canary.min_requests
                    ))
                    .unwrap_or_default()
            ),
            None => eprintln!(
                "{plugin}{}: no canary; revision {revision} serves every request",
                in_env(&distribution)
            ),
        },
        None => eprintln!(
            "{plugin} is not published{}; comparing whatever answers",
            in_env(&distribution)
        ),
    }
    let mut events = client.subscribe(namespace.result_event(plugin)).await?;
    client.flush().await?;
    eprintln!(
        "watching result events for {}...",
        humantime::format_duration(watch_for)
    );
    let mut comparison = Comparison::default();
    let until = tokio::time::Instant::now() + watch_for;
    let stop = mofa_bus::worker::shutdown::signal();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = &mut stop => break,
            message = events.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        match rmp_serde::from_slice::<ResultEvent>(&message.payload) {
            Ok(event) => comparison.add(&event),
            Err(e) => eprintln!("warning: undecodable result event: {e}"),
        }
    }
    let rows = comparison.rows();
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        println!(
            "{:<10} {:<8} {:>9} {:>7} {:>10} {:>10} {:>10}",
            "revision", "variant", "requests", "errors", "error rate", "p50", "p99"
        );
        for row in &rows {
            println!(
                "{:<10} {:<8} {:>9} {:>7} {:>9.2}% {:>10} {:>10}",
                row.revision.map_or("local".to_string(), |r| r.to_string()),
                if row.canary { "canary" } else { "stable" },
                row.requests,
                row.errors,
                row.error_rate * 100.0,
                format!("{} µs", row.p50_us),
                format!("{} µs", row.p99_us),
            );
        }
    }
    if comparison.total() == 0 {
        eprintln!(
            "no result events for {plugin} in {} (no traffic, or workers run with events.results off)",
            humantime::format_duration(watch_for)
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
