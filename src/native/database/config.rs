//! The `[database]` section of the worker config: which database the `database` plugin reaches
//! and the limits it keeps.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the embedded SQLite database inside the worker's data directory.
pub const SQLITE_FILE: &str = "mofa.db";

/// Settings of the `database` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` (or `postgresql://…`) for PostgreSQL, `sqlite://PATH` for a SQLite file;
    /// empty for the embedded SQLite file `mofa.db` in the worker's data directory.
    /// `MOFA_DATABASE_URL` overrides it.
    pub url: String,
    /// Let statements write. Off by default: every statement then runs in a read-only
    /// transaction (PostgreSQL) or on a connection opened read-only (SQLite), so the database
    /// itself refuses writes.
    pub allow_writes: bool,
    /// Most rows one statement may return; more is a 413, never a silent truncation.
    pub max_rows: usize,
    /// Connections the plugin's pool may hold open.
    pub max_connections: u32,
    /// Deadline of one statement, in milliseconds, when the caller has no earlier one.
    pub timeout_ms: u64,
    /// How long to wait for a connection before answering 503, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            allow_writes: false,
            max_rows: 10_000,
            max_connections: 8,
            timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
        }
    }
}

/// Which database a configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A PostgreSQL server, by URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
}

impl DatabaseConfig {
    /// The database this configuration names; an empty `url` means `mofa.db` in `data_dir`.
    pub fn target(&self, data_dir: &Path) -> Result<Target, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(Target::Sqlite(data_dir.join(SQLITE_FILE)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_string()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() || path == ":memory:" {
                return Err(format!(
                    "database.url {url:?} names no file; give a path (sqlite:///var/lib/mofa/app.db) or leave the url empty for {SQLITE_FILE} in the data directory"
                ));
            }
            return Ok(Target::Sqlite(path.into()));
        }
        Err(format!(
            "database.url must start with postgres://, postgresql:// or sqlite://, got {:?}",
            redact(url)
        ))
    }

    /// Checks the values that would make the plugin unable to serve.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 || self.max_connections == 0 {
            return Err("database.max_rows and database.max_connections must be at least 1".into());
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(
                "database.timeout_ms and database.connect_timeout_ms must be at least 1".into(),
            );
        }
        self.target(Path::new(".")).map(|_| ())
    }
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let dir = Path::new("/data");
        let config = |url: &str| DatabaseConfig {
            url: url.into(),
            ..DatabaseConfig::default()
        };
        assert_eq!(
            config("").target(dir),
            Ok(Target::Sqlite("/data/mofa.db".into()))
        );
        assert_eq!(
            config("sqlite:///tmp/x.db").target(dir),
            Ok(Target::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            config("postgres://u@h/db").target(dir),
            Ok(Target::Postgres("postgres://u@h/db".into()))
        );
        assert!(config("mysql://h/db").target(dir).is_err());
        assert!(config("sqlite::memory:").target(dir).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db.example:5432/sales"),
            "postgres://app@db.example:5432/sales"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        let message = DatabaseConfig {
            url: "mysql://root:pw@h/db".into(),
            ..DatabaseConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(!message.contains("pw"), "{message}");
    }
}
