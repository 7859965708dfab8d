//! The plugins bucket's verbs beside publishing: `mofa history` (a table, or `--json`),
//! `mofa rollback` and `mofa remove`. A plugin the bucket does not hold gets one wording for
//! all three, and exit status 1.

use std::process::ExitCode;

use mofa_bus::distribution::{DistributionError, PluginRecord, Stored};
use mofa_bus::subjects;

use super::connect::{Nats, NatsArgs};

/// Republish an earlier revision of a plugin (default: the one before the current); when
/// a canary runs, drop it (its stable revision serves everything again).
///
/// Exit status: 0 rolled back, 1 the plugin is not published, 2 anything else failed.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa rollback discount\n  \
    mofa rollback discount --to 3           # see `mofa history discount`")]
pub(crate) struct RollbackArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// Revision to return to (see `mofa history`).
    #[arg(long)]
    pub(crate) to: Option<u64>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Delete a plugin from the bucket: every worker removes its endpoint.
///
/// Exit status: 0 removed, 1 the plugin is not published (nothing to remove).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa remove vat")]
pub(crate) struct RemoveArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// List the stored revisions of a plugin, oldest first, as a table (times in UTC).
///
/// Exit status: 0 listed, 1 the plugin was never published.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa history discount\n  \
    mofa history discount --json            # raw fields, one JSON object per revision")]
pub(crate) struct HistoryArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// Print JSON lines with the raw fields instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl RollbackArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        rollback(&self.nats.resolve(), &self.plugin, self.to).await
    }
}

impl RemoveArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        remove(&self.nats.resolve(), &self.plugin).await
    }
}

impl HistoryArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        history(&self.nats.resolve(), &self.plugin, self.json).await
    }
}

/// Exit 1 with the message for a plugin the bucket does not hold; any other error as it is.
fn not_published(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match result {
        Err(e) => match e.downcast_ref::<DistributionError>() {
            Some(DistributionError::NotPublished { .. }) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// `mofa rollback PLUGIN [--to N]`.
pub(crate) async fn rollback(
    nats: &Nats,
    plugin: &str,
    to: Option<u64>,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    not_published(
        async {
            let (revision, from) = nats.distribution().await?.rollback(plugin, to).await?;
            println!("rolled {plugin} back to revision {from} (published as revision {revision})");
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `mofa remove PLUGIN`: exit 1 when there was nothing to remove.
pub(crate) async fn remove(nats: &Nats, plugin: &str) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    not_published(
        async {
            let distribution = nats.distribution().await?;
            distribution.remove(plugin).await?;
            println!(
                "removed {plugin} from the {} bucket: every worker stops serving it",
                distribution.kv().name
            );
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `mofa history PLUGIN [--json]`: the stored revisions, oldest first.
pub(crate) async fn history(nats: &Nats, plugin: &str, json: bool) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    not_published(
        async {
            let distribution = nats.distribution().await?;
            let history = distribution.history(plugin).await?;
            if history.is_empty() {
                return Err(distribution.not_published(plugin, "list").into());
            }
            if json {
                for (revision, stored) in &history {
                    println!("{}", json_row(*revision, stored));
                }
            } else {
                print_table(&history);
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// One revision with its raw fields (times in Unix milliseconds, the whole SHA-256).
fn json_row(revision: u64, stored: &Stored) -> serde_json::Value {
    match stored {
        Stored::Record(r) => serde_json::json!({
            "revision": revision,
            "operation": "put",
            "kind": r.kind.as_str(),
            "version": r.version,
            "sha256": r.sha256,
            "publisher": r.publisher,
            "published_ms": r.published_ms,
            "signer": r.signer,
            "rollback_of": r.rollback_of,
            "canary": r.canary,
            "tests": r.tests,
            "promoted_from": r.promoted_from,
        }),
        Stored::Deleted => serde_json::json!({"revision": revision, "operation": "delete"}),
        Stored::Unreadable(e) => {
            serde_json::json!({"revision": revision, "operation": "unreadable", "error": e})
        }
    }
}

/// The history as a table with a header: times in UTC, the version only where it is not the
/// hash's own prefix (the default label), notes last.
fn print_table(history: &[(u64, Stored)]) {
    println!(
        "{:>8}  {:<23}  {:<5}  {:<12}  {:<12}  {:<24}  NOTES",
        "REVISION", "PUBLISHED (UTC)", "KIND", "SHA256", "VERSION", "PUBLISHER"
    );
    for (revision, stored) in history {
        match stored {
            Stored::Record(r) => {
                let sha = &r.sha256[..r.sha256.len().min(12)];
                let version = if r.version == sha { "-" } else { &r.version };
                println!(
                    "{revision:>8}  {:<23}  {:<5}  {sha:<12}  {version:<12}  {:<24}  {}",
                    utc(r.published_ms),
                    r.kind.as_str(),
                    r.publisher,
                    notes(r)
                );
            }
            Stored::Deleted => println!("{revision:>8}  {:<23}  removed", "-"),
            Stored::Unreadable(e) => println!("{revision:>8}  {:<23}  unreadable: {e}", "-"),
        }
    }
}

/// `2026-12-04 15:24:04`.
fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// What else a revision says: rollback, canary, promotion, tests.
fn notes(r: &PluginRecord) -> String {
    let mut notes = Vec::new();
    if let Some(rev) = r.rollback_of {
        notes.push(format!("rollback of {rev}"));
    }
    if let Some(canary) = &r.canary {
        notes.push(format!(
            "canary {}% beside {}",
            canary.percent, canary.stable
        ));
    }
    if let Some(from) = &r.promoted_from {
        notes.push(format!("promoted from {from}"));
    }
    match &r.tests {
        Some(tests) if tests.skipped => notes.push("published untested (--no-test)".into()),
        Some(tests) => notes.push(format!("{} test cases passed", tests.passed)),
        None => {}
    }
    if notes.is_empty() {
        "-".to_string()
    } else {
        notes.join("; ")
    }
}
