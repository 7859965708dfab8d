//! Rollouts: `mofa publish` (test cases first, optionally as a canary), `mofa promote` (a
//! canary to the only revision, or a revision from one environment to another) and
//! `mofa canary` (the canary against its stable revision, live).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::revisions::Comparison;
use anyhow::Context;
use futures::StreamExt;
use mofa_bus::config::{ReloadConfig, WorkerConfig};
use mofa_bus::distribution::{Canary, Distribution, TestsRun, INLINE_LIMIT};
use mofa_bus::events::ResultEvent;
use mofa_bus::subjects;

use super::connect::{BucketArgs, Nats, NatsArgs};
use super::local::{self, Checked};

/// Publish scripts (.rhai) and modules (.wasm, with their .toml manifest) to the plugins
/// bucket: every worker, including ones that start later, serves the new revision.
///
/// Each file is first built exactly as a worker builds it (compiled, its top level run,
/// its manifest and limits checked) and its test cases (FILE.test.toml) run; if any file
/// fails either, nothing is published. Exit status: 0 published, 1 nothing published (a
/// file does not build or a case failed), 2 NATS or the bucket is unreachable.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa publish plugins/discount.rhai\n  \
    mofa publish plugins/discount_wasm.wasm --version 1.4.0 --sign signing.nk\n  \
    mofa publish plugins/discount.rhai --canary 10 --max-error-rate 5")]
pub(crate) struct PublishArgs {
    /// Files to publish; each plugin is named after its file stem (a tool after its name).
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) options: PublishOptions,
    #[command(flatten)]
    pub(crate) bucket: BucketArgs,
}

/// Make the canary of PLUGIN the only revision (its exact record, without the canary);
/// or, with --from and --to, copy the revision serving in one environment to another
/// (same code, SHA-256 and signature), once it builds as a worker would build it.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa promote discount                   # the canary serves everything\n  \
    mofa promote discount --from staging --to production")]
pub(crate) struct PromoteArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// Copy from this environment...
    #[arg(long, requires = "to")]
    pub(crate) from: Option<String>,
    /// ...to this one.
    #[arg(long, requires = "from")]
    pub(crate) to: Option<String>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Compare a plugin's canary with its stable revision live, from the fleet's result
/// events: requests, errors, error rate, p50 and p99 per revision.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa canary discount\n  \
    mofa canary discount --for 1m --json")]
pub(crate) struct CanaryArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// How long to watch.
    #[arg(long = "for", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) watch_for: Duration,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Make an nkey pair for signing revisions: the seed (secret) goes to FILE, or to stdout
/// without --out; the public key, for workers' `reload.trusted_keys`, to stdout.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa keygen --out signing.nk            # then: mofa publish FILE --sign signing.nk")]
pub(crate) struct KeygenArgs {
    /// File to write the seed to (created with mode 600).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl PublishArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        publish(self.bucket, &self.files, self.options).await
    }
}

impl PromoteArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        promote(&self.nats.resolve(), &self.plugin, self.from.zip(self.to)).await
    }
}

impl CanaryArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        canary(
            &self.nats.resolve(),
            &self.plugin,
            self.watch_for,
            self.json,
        )
        .await
    }
}

impl KeygenArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        keygen(self.out.as_deref())
    }
}

/// `mofa keygen`: a new nkey pair for signing revisions.
fn keygen(out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let key = nkeys::KeyPair::new_user();
    let seed = key
        .seed()
        .map_err(|e| anyhow::anyhow!("cannot encode the seed: {e}"))?;
    match out {
        Some(path) => {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(file, "{seed}")?;
            eprintln!("seed written to {} (keep it secret)", path.display());
        }
        None => println!("seed: {seed}"),
    }
    println!("public key: {}", key.public_key());
    Ok(ExitCode::SUCCESS)
}

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
    /// it was not tested. The plugin is still built as a worker would build it.
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

/// `mofa publish`: every file is built as a worker would build it, and its test cases run,
/// before anything is published; if one fails, nothing is.
pub(crate) async fn publish(
    bucket: BucketArgs,
    files: &[PathBuf],
    options: PublishOptions,
) -> anyhow::Result<ExitCode> {
    let canary = options.canary()?;
    let config = match &options.config {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    let Some(tested) = checked(files, &config, options.no_test).await? else {
        return Ok(ExitCode::from(1));
    };
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

/// Builds every file as a worker would and (unless `no_test`) runs its test cases: what each
/// record says of its cases, or `None` (reported on stderr) when a file does not build or a
/// case failed.
async fn checked(
    files: &[PathBuf],
    config: &WorkerConfig,
    no_test: bool,
) -> anyhow::Result<Option<Vec<Option<TestsRun>>>> {
    let runner = local::checker(config).await?;
    let mut broken = Vec::new();
    for file in files {
        if let Err(e) = runner.verify(file).await {
            eprintln!("error: {}", local::build_error(&e));
            broken.push(file.display().to_string());
        }
    }
    if !broken.is_empty() {
        eprintln!(
            "error: nothing published: {} would not load on a worker (fix it and publish again)",
            broken.join(", ")
        );
        return Ok(None);
    }
    if no_test {
        let skipped = TestsRun {
            passed: 0,
            skipped: true,
        };
        return Ok(Some(vec![Some(skipped); files.len()]));
    }
    let mut tested = Vec::with_capacity(files.len());
    let mut failed = Vec::new();
    for file in files {
        // Every file was built above: only its cases run here.
        match local::run_cases(file, config, &mut std::io::stderr()).await {
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
        return Ok(None);
    }
    Ok(Some(tested))
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
            if let Some((revision, record)) = source.current(plugin).await? {
                if let Err(e) = builds(&source, plugin, revision, &record).await {
                    eprintln!("error: {e}");
                    eprintln!(
                        "error: nothing promoted: revision {revision} of {plugin} in {from} would not load on a worker"
                    );
                    return Ok(ExitCode::from(1));
                }
            }
            let (revision, copied) = target.promote_from(&source, plugin).await?;
            println!(
                "promoted {plugin} revision {copied} of {from} to {to} as revision {revision}"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds `record` (revision `revision` of `name`) as a worker would, under the default limits.
async fn builds(
    bucket: &Distribution,
    name: &str,
    revision: u64,
    record: &mofa_bus::distribution::PluginRecord,
) -> anyhow::Result<()> {
    let kind = mofa_bus::kinds::of(record.kind)
        .ok_or_else(|| anyhow::anyhow!("{name}: {} plugins are not distributed", record.kind))?;
    let code = mofa_bus::kinds::Code {
        name: name.to_string(),
        body: bucket.code(record).await?,
        sidecar: record.manifest.clone(),
        version: Some(record.version.clone()),
        origin: format!("{name}.{} (revision {revision})", kind.extension),
    };
    let runner = local::checker(&WorkerConfig::default()).await?;
    runner
        .verify_code(kind, code)
        .await
        .map_err(|e| anyhow::anyhow!(local::build_error(&e)))?;
    Ok(())
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
