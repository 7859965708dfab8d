//! `mofa watch DIR`: publish scripts and modules as they change on disk.
//!
//! File-system events are debounced per file with a *trailing* timer: every write restarts
//! the file's timer, and the file is handled once it has been quiet for the debounce period,
//! reading it then. A burst of editor writes is therefore handled once, and always the last
//! write. Only writes, creations, renames and removals count: reading a file (as publishing
//! does) is not a change. Editing `<name>.toml` republishes `<name>.wasm` with the new
//! manifest; editing `<name>.test.toml` runs the cases again. The directory and the plugin
//! kinds' subdirectories of it (`rules/`, ...; see [`mofa_bus::kinds`]) are watched.
//!
//! Like `mofa publish`, a file is built as a worker would build it and its test cases run
//! before it is published; a file that fails either is not published. The watcher speaks once
//! per change: one line when a file fails (the path once), one when it is published, one when
//! a fix brings it back to what the bucket already serves, and nothing while a file's content
//! (code, sidecar and cases) is what it last handled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use mofa_bus::config::WorkerConfig;
use mofa_bus::distribution::{Distribution, INLINE_LIMIT};
use mofa_bus::kinds;
use mofa_bus::local::LocalRunner;

use super::connect::BucketArgs;
use super::local;

/// Watch a directory and publish each changed script or module once its writes settle,
/// after it builds as a worker would and its test cases (FILE.test.toml) pass, as `mofa
/// publish` does. One line per change: published, failed (with the reason), or fixed.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa watch plugins\n  \
    mofa watch plugins --debounce 1s --no-test")]
pub(crate) struct WatchArgs {
    /// Directory of .rhai, .wasm and .toml files.
    pub(crate) dir: PathBuf,
    /// Quiet time after the last write before a file is published (trailing debounce).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub(crate) debounce: Duration,
    /// Publish without running the test cases (each file is still built first).
    #[arg(long)]
    pub(crate) no_test: bool,
    /// The worker configuration whose limits the builds and test cases run under.
    #[arg(long, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) bucket: BucketArgs,
}

impl WatchArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let config = match &self.config {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        let distribution = self.bucket.open().await?;
        watch(distribution, &self.dir, self.debounce, config, self.no_test).await
    }
}

/// What handling one file came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Published as this revision.
    Published { plugin: String, revision: u64 },
    /// The bucket's current revision holds this content already.
    Current { plugin: String, revision: u64 },
    /// Not published: why (the message names the file).
    Failed(String),
}

/// One file's last outcome and the content it was reached on.
struct Handled {
    fingerprint: [u8; 32],
    outcome: Outcome,
}

/// The watcher's state: the bucket, the checks and what each file last came to.
struct Watch {
    distribution: Distribution,
    runner: LocalRunner,
    /// The limits test cases run under; `None` with `--no-test`.
    cases: Option<WorkerConfig>,
    handled: HashMap<PathBuf, Handled>,
}

/// `mofa watch`: until a signal, publishes each file of `dir` that changes.
pub(crate) async fn watch(
    distribution: Distribution,
    dir: &Path,
    debounce: Duration,
    config: WorkerConfig,
    no_test: bool,
) -> anyhow::Result<ExitCode> {
    let runner = local::checker(&config).await?;
    let mut state = Watch {
        distribution,
        runner,
        cases: (!no_test).then_some(config),
        handled: HashMap::new(),
    };
    let watching = state.run(dir, debounce);
    tokio::select! {
        watched = watching => watched?,
        _ = mofa_bus::worker::shutdown::signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

impl Watch {
    /// Says which files differ from the bucket, publishes them, then handles every change.
    async fn run(&mut self, dir: &Path, debounce: Duration) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let _watcher = watcher(dir, tx)?;
        self.start(dir, debounce).await;
        let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
        loop {
            let next_due = pending.values().min().map(|t| *t + debounce);
            tokio::select! {
                path = rx.recv() => {
                    let Some(path) = path else { return Ok(()) };
                    if let Some(file) = code_file_of(&path) {
                        pending.insert(file, Instant::now());
                    }
                }
                _ = sleep_until(next_due) => {
                    let now = Instant::now();
                    let due: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, last)| **last + debounce <= now)
                        .map(|(p, _)| p.clone())
                        .collect();
                    for path in due {
                        pending.remove(&path);
                        if path.is_file() {
                            self.handle(&path).await;
                        } else {
                            self.handled.remove(&path);
                        }
                    }
                }
            }
        }
    }

    /// The first look: one line naming the files that differ from the bucket, then each of
    /// them handled.
    async fn start(&mut self, dir: &Path, debounce: Duration) {
        let files = kinds::code_files(dir);
        let mut differ = Vec::new();
        for path in &files {
            match self.current(path).await {
                Ok(Some((plugin, revision))) => {
                    if let Some(fingerprint) = fingerprint(path) {
                        let outcome = Outcome::Current { plugin, revision };
                        self.handled.insert(
                            path.clone(),
                            Handled {
                                fingerprint,
                                outcome,
                            },
                        );
                    }
                }
                Ok(None) | Err(_) => differ.push(path.clone()),
            }
        }
        let names: Vec<String> = differ.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "watching {} (debounce {}): {} of {} plugin file(s) differ from the {} bucket{}",
            dir.display(),
            humantime::format_duration(debounce),
            differ.len(),
            files.len(),
            self.distribution.kv().name,
            if names.is_empty() {
                String::new()
            } else {
                format!(" and will be published: {}", names.join(", "))
            }
        );
        for path in differ {
            self.handle(&path).await;
        }
    }

    /// The plugin `path` is served as and the bucket revision holding its content, if the
    /// bucket's current revision does.
    async fn current(&self, path: &Path) -> anyhow::Result<Option<(String, u64)>> {
        let (name, record) = self
            .distribution
            .record_for_file(path, None, usize::MAX)
            .await?;
        Ok(match self.distribution.current(&name).await? {
            Some((revision, current))
                if current.sha256 == record.sha256 && current.manifest == record.manifest =>
            {
                Some((name, revision))
            }
            _ => None,
        })
    }

    /// Handles `path` unless its content is what it last handled, and says what came of it.
    async fn handle(&mut self, path: &Path) {
        let Some(fingerprint) = fingerprint(path) else {
            return;
        };
        let previous = self.handled.get(path);
        if previous.is_some_and(|h| h.fingerprint == fingerprint) {
            return;
        }
        let was_failing = previous.is_some_and(|h| matches!(h.outcome, Outcome::Failed(_)));
        let outcome = self.publish(path).await;
        match &outcome {
            Outcome::Published { plugin, revision } => {
                println!("published {plugin} as revision {revision}")
            }
            Outcome::Current { plugin, revision } if was_failing => println!(
                "{} is fixed: the bucket's revision {revision} of {plugin} holds it already",
                path.display()
            ),
            Outcome::Current { .. } => {}
            Outcome::Failed(why) => eprintln!("error: {why}"),
        }
        self.handled.insert(
            path.to_path_buf(),
            Handled {
                fingerprint,
                outcome,
            },
        );
    }

    /// Builds `path` as a worker would, compares it with the bucket, runs its cases and
    /// publishes it.
    async fn publish(&self, path: &Path) -> Outcome {
        if let Err(e) = self.runner.verify(path).await {
            return Outcome::Failed(format!("{}; not published", local::build_error(&e)));
        }
        let failed = |e: &dyn std::fmt::Display| Outcome::Failed(format!("{e}; not published"));
        match self.current(path).await {
            Ok(Some((plugin, revision))) => return Outcome::Current { plugin, revision },
            Ok(None) => {}
            Err(e) => return failed(&e),
        }
        let tests = match &self.cases {
            Some(config) => match mofa_bus::local::cases::check(path, config).await {
                Ok(tests) => tests,
                Err(why) => return Outcome::Failed(format!("{}: {why}", path.display())),
            },
            None => Some(mofa_bus::distribution::TestsRun {
                passed: 0,
                skipped: true,
            }),
        };
        let (plugin, mut record) = match self
            .distribution
            .record_for_file(path, None, INLINE_LIMIT)
            .await
        {
            Ok(made) => made,
            Err(e) => return failed(&e),
        };
        record.tests = tests;
        match self.distribution.put(&plugin, &record).await {
            Ok(revision) => Outcome::Published { plugin, revision },
            Err(e) => failed(&e),
        }
    }
}

/// Watches `dir` and its kinds' subdirectories that exist now, sending every path written,
/// created, renamed or removed (never one only read).
fn watcher(
    dir: &Path,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    for sub in kinds::search_dirs(dir) {
        if sub == dir || sub.is_dir() {
            watcher
                .watch(&sub, RecursiveMode::NonRecursive)
                .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", sub.display()))?;
        }
    }
    Ok(watcher)
}

/// The code file a changed path stands for: itself, the code beside a sidecar, or the code a
/// case file tests.
fn code_file_of(path: &Path) -> Option<PathBuf> {
    kinds::code_file(path).or_else(|| {
        kinds::is_case_file(path)
            .then(|| kinds::code_for_case(path))
            .flatten()
    })
}

/// SHA-256 over everything that decides a file's outcome: its code, its sidecar and its case
/// file. `None` when the code cannot be read (it went away).
fn fingerprint(code: &Path) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    hash.update(std::fs::read(code).ok()?);
    let kind = kinds::for_path(code)?;
    let sidecar = kind.sidecar.map(|extension| code.with_extension(extension));
    for beside in sidecar.into_iter().chain([kinds::case_file_for(code)]) {
        match std::fs::read(&beside) {
            Ok(bytes) => {
                hash.update([1]);
                hash.update(bytes);
            }
            Err(_) => hash.update([0]),
        }
    }
    Some(hash.finalize().into())
}

/// Sleeps until `due`, or forever when nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
