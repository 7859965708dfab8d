//! `mofa watch DIR`: publish scripts and modules as they change on disk.
//!
//! File-system events are debounced per file with a *trailing* timer: every event restarts
//! the file's timer, and the file is published once it has been quiet for the debounce period,
//! reading it then. A burst of editor writes therefore publishes once, and always the last
//! write. A file whose content equals the revision already published is not published again.
//! Editing `<name>.toml` republishes `<name>.wasm` with the new manifest. The directory and the
//! plugin kinds' subdirectories of it (`rules/`, ...; see [`crate::kinds`]) are watched.
//!
//! Like `mofa publish`, a file's test cases (`<name>.test.toml`, see [`crate::local::cases`])
//! run before it is published, and a file whose cases fail is not published; saving the file
//! or its cases again tries again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::store::{Distribution, DistributionError};
use crate::config::WorkerConfig;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Published as this revision.
    Revision {
        /// Plugin name.
        plugin: String,
        /// New bucket revision.
        revision: u64,
    },
    /// Unchanged since the last publish.
    Unchanged {
        /// Plugin name.
        plugin: String,
    },
}

/// Publishes `path` unless the bucket already holds the same content. With `cases` (the
/// limits to run them under), the file's test cases run first: a failing one is an error and
/// nothing is published.
pub async fn publish_if_changed(
    distribution: &Distribution,
    path: &Path,
    inline_limit: usize,
    cases: Option<&WorkerConfig>,
) -> Result<Published, DistributionError> {
    let (name, mut record) = distribution
        .record_for_file(path, None, inline_limit)
        .await?;
    if let Some((_, current)) = distribution.current(&name).await? {
        if current.sha256 == record.sha256 && current.manifest == record.manifest {
            return Ok(Published::Unchanged { plugin: name });
        }
    }
    if let Some(config) = cases {
        record.tests = crate::local::cases::check(path, config)
            .await
            .map_err(|message| DistributionError::File {
                path: path.display().to_string(),
                message,
            })?;
    }
    let revision = distribution.put(&name, &record).await?;
    Ok(Published::Revision {
        plugin: name,
        revision,
    })
}

/// Watches `dir` until the process ends, calling `report` for every file handled; with
/// `cases`, each file's test cases run before it is published.
pub async fn run(
    distribution: Distribution,
    dir: &Path,
    debounce: Duration,
    inline_limit: usize,
    cases: Option<&WorkerConfig>,
    mut report: impl FnMut(&Path, Result<Published, DistributionError>),
) -> Result<(), DistributionError> {
    let dir_error = |e: String| DistributionError::File {
        path: dir.display().to_string(),
        message: e,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|e| dir_error(e.to_string()))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| dir_error(e.to_string()))?;
    // The kinds' subdirectories (`rules/`, ...) that exist now.
    for sub in crate::kinds::search_dirs(dir).iter().skip(1) {
        if sub.is_dir() {
            watcher
                .watch(sub, RecursiveMode::NonRecursive)
                .map_err(|e| dir_error(format!("{}: {e}", sub.display())))?;
        }
    }

    // Start from what is on disk now.
    for path in crate::kinds::code_files(dir) {
        let result = publish_if_changed(&distribution, &path, inline_limit, cases).await;
        report(&path, result);
    }

    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next_due = pending.values().min().map(|t| *t + debounce);
        tokio::select! {
            path = rx.recv() => {
                let Some(path) = path else { return Ok(()) };
                let file = crate::kinds::code_file(&path).or_else(|| {
                    crate::kinds::is_case_file(&path)
                        .then(|| crate::kinds::code_for_case(&path))
                        .flatten()
                });
                if let Some(file) = file {
                    pending.insert(file, Instant::now());
                }
            }
            _ = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, last)| **last + debounce <= now)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in due {
                    pending.remove(&path);
                    if path.is_file() {
                        let result =
                            publish_if_changed(&distribution, &path, inline_limit, cases).await;
                        report(&path, result);
                    }
                }
            }
        }
    }
}
