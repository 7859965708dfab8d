//! `database`: SQL on the worker's database, for scripts that keep business logic while a
//! compiled plugin holds the connection pool (`call_plugin("database", "SELECT …")`).
//!
//! The backend is embedded SQLite by default (`mofa.db` in the worker's data directory,
//! created on first use) and PostgreSQL when `[database] url` or `MOFA_DATABASE_URL` names
//! one; both go through sqlx. Input is a SQL string, answered with the rows as JSON text, or a
//! map `{sql, params}` with positional parameters bound by the driver, answered with the rows
//! as a list of maps. The database itself enforces the read-only default, each statement ends
//! at the request's deadline, `max_rows` bounds a result, and a database that is down is a 503
//! while the worker serves everything else and the pool reconnects by itself.

mod config;
mod postgres;
mod rows;
mod sqlite;

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use config::{redact, DatabaseConfig, Target, SQLITE_FILE};
pub use rows::{Cell, Rows};

use crate::plugin::{AgentPlugin, CallContext, PluginError, PluginKind, PluginMetadata, Value};

/// What both backends need to know about their limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    allow_writes: bool,
    max_rows: usize,
    max_connections: u32,
    connect_timeout: Duration,
}

/// Why a statement failed, before it becomes a reply code and a message naming the database.
#[derive(Debug)]
enum Failure {
    /// The statement or its parameters are wrong (400).
    BadInput(String),
    /// The statement tried to write while writes are off (400).
    ReadOnly(String),
    /// The deadline passed while it ran (408).
    Timeout,
    /// It returned more than `max_rows` rows (413).
    TooManyRows(usize),
    /// The database is down or refused service (503).
    Unavailable(String),
    /// No connection within the connect timeout (503).
    NoConnection(Duration),
    /// Anything else (500).
    Internal(String),
}

impl Failure {
    fn into_error(self, name: &str) -> PluginError {
        match self {
            Failure::BadInput(message) => PluginError::BadInput(format!("database {name}: {message}")),
            Failure::ReadOnly(message) => PluginError::BadInput(format!(
                "database {name}: writes are off ({message}); set [database] allow_writes = true to let statements write"
            )),
            Failure::Timeout => PluginError::Timeout(format!(
                "database {name}: the statement was cancelled at the request's deadline ([database] timeout_ms, or the calling plugin's own limit)"
            )),
            Failure::TooManyRows(max) => PluginError::LimitExceeded(format!(
                "database {name}: the statement returned more than database.max_rows = {max} rows; add a LIMIT or an aggregate, or raise [database] max_rows"
            )),
            Failure::Unavailable(message) => {
                PluginError::Unavailable(format!("database {name} is unavailable: {message}"))
            }
            Failure::NoConnection(waited) => PluginError::Unavailable(format!(
                "database {name} is unavailable: no connection within {} ms ([database] connect_timeout_ms)",
                waited.as_millis()
            )),
            Failure::Internal(message) => PluginError::Failed(format!("database {name}: {message}")),
        }
    }
}

/// The time left before `deadline`, or a 408 when none is.
fn time_left(deadline: Instant, name: &str) -> Result<Duration, PluginError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Timeout.into_error(name));
    }
    Ok(left)
}

/// A connection from `pool` within the connect timeout and the time left.
async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    left: Duration,
    limits: &Limits,
    classify: fn(sqlx::Error) -> Failure,
) -> Result<sqlx::pool::PoolConnection<DB>, Failure> {
    match tokio::time::timeout(left.min(limits.connect_timeout), pool.acquire()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify(e)),
        Err(_) => Err(Failure::NoConnection(limits.connect_timeout)),
    }
}

/// Reads a statement's rows, each through `cells`, refusing more than `max_rows`.
async fn collect<R>(
    rows: impl futures::Stream<Item = Result<R, sqlx::Error>>,
    max_rows: usize,
    classify: fn(sqlx::Error) -> Failure,
    cells: fn(&R) -> Result<Vec<Cell>, Failure>,
) -> Result<Vec<Vec<Cell>>, Failure> {
    use futures::TryStreamExt;
    let mut rows = std::pin::pin!(rows);
    let mut read = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(classify)? {
        if read.len() == max_rows {
            return Err(Failure::TooManyRows(max_rows));
        }
        read.push(cells(&row)?);
    }
    Ok(read)
}

/// What a driver error that is not the database's own answer means.
fn classify_driver(e: sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable(e.to_string()),
        sqlx::Error::Encode(_) => Failure::BadInput(e.to_string()),
        other => Failure::Internal(other.to_string()),
    }
}

/// A parameter's type with its article, for messages.
fn param_kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "a bool",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an ext value",
    }
}

/// A connection pool to one database.
pub struct Database {
    backend: Backend,
    timeout: Duration,
    name: String,
}

enum Backend {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

impl Database {
    /// The database `config` names (an empty url: `mofa.db` in `data_dir`). Nothing connects
    /// before the first statement.
    pub fn open(config: &DatabaseConfig, data_dir: &Path) -> Result<Database, String> {
        config.validate()?;
        let limits = Limits {
            allow_writes: config.allow_writes,
            max_rows: config.max_rows,
            max_connections: config.max_connections,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        };
        let (backend, name) = match config.target(data_dir)? {
            Target::Postgres(url) => {
                let name = redact(&url);
                (
                    Backend::Postgres(postgres::Pg::new(&url, name.clone(), limits)?),
                    name,
                )
            }
            Target::Sqlite(path) => {
                let name = format!("sqlite://{}", path.display());
                (
                    Backend::Sqlite(sqlite::Lite::new(path, name.clone(), limits)),
                    name,
                )
            }
        };
        Ok(Database {
            backend,
            timeout: Duration::from_millis(config.timeout_ms),
            name,
        })
    }

    /// The database's URL, without a password.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs one statement with positional `params`, by `deadline`.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Value],
        deadline: Instant,
    ) -> Result<Rows, PluginError> {
        match &self.backend {
            Backend::Postgres(pg) => pg.query(sql, params, deadline).await,
            Backend::Sqlite(lite) => lite.query(sql, params, deadline).await,
        }
    }

    /// Runs a script of any number of statements (a schema, sample data).
    pub async fn run_script(&self, script: String) -> Result<(), PluginError> {
        match &self.backend {
            Backend::Postgres(pg) => pg.run_script(script).await,
            Backend::Sqlite(lite) => lite.run_script(script).await,
        }
    }
}

/// The `database` plugin.
pub struct DatabasePlugin {
    meta: PluginMetadata,
    database: Result<Database, String>,
}

impl std::fmt::Debug for DatabasePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabasePlugin")
            .field("database", &self.database.as_ref().map(Database::name))
            .finish()
    }
}

impl DatabasePlugin {
    /// The plugin for the database `config` names; a configuration that names none fails
    /// the plugin's load, with the reason.
    pub fn new(config: &DatabaseConfig, data_dir: &Path) -> Self {
        let database = Database::open(config, data_dir);
        let description = match &database {
            Ok(db) => format!(
                "SQL on {} ({}): a SQL string returns rows as JSON text, {{sql, params}} returns a list of maps",
                db.name(),
                if config.allow_writes { "read-write" } else { "read-only" }
            ),
            Err(_) => "SQL on the configured database (misconfigured)".to_string(),
        };
        Self {
            meta: PluginMetadata::new("database", PluginKind::Native)
                .version(env!("CARGO_PKG_VERSION"))
                .description(description)
                .capability("database"),
            database,
        }
    }

    fn database(&self) -> Result<&Database, PluginError> {
        self.database
            .as_ref()
            .map_err(|e| PluginError::Load(e.clone()))
    }
}

/// A request: the statement and its parameters, and whether the reply is JSON text.
struct Request<'a> {
    sql: &'a str,
    params: &'a [Value],
    json: bool,
}

fn request(input: &Value) -> Result<Request<'_>, PluginError> {
    const SHAPE: &str = "the input is a SQL string, or a map {sql, params} with params a list";
    match input {
        Value::String(s) => Ok(Request {
            sql: s
                .as_str()
                .ok_or_else(|| PluginError::BadInput("the SQL is not valid UTF-8".into()))?,
            params: &[],
            json: true,
        }),
        Value::Map(entries) => {
            let mut sql = None;
            let mut params: &[Value] = &[];
            for (key, value) in entries {
                match (key.as_str(), value) {
                    (Some("sql"), Value::String(s)) => sql = s.as_str(),
                    (Some("params"), Value::Array(list)) => params = list,
                    (Some("params"), Value::Nil) => {}
                    (Some("sql" | "params"), other) => {
                        return Err(PluginError::BadInput(format!(
                            "{} is {}; {SHAPE}",
                            key.as_str().unwrap_or_default(),
                            param_kind(other)
                        )))
                    }
                    (other, _) => {
                        return Err(PluginError::BadInput(format!(
                            "unknown field {}; {SHAPE}",
                            other.map_or_else(|| key.to_string(), |k| format!("{k:?}"))
                        )))
                    }
                }
            }
            let sql = sql
                .ok_or_else(|| PluginError::BadInput(format!("missing field \"sql\"; {SHAPE}")))?;
            Ok(Request {
                sql,
                params,
                json: false,
            })
        }
        other => Err(PluginError::BadInput(format!(
            "{SHAPE}, got {}",
            param_kind(other)
        ))),
    }
}

#[async_trait]
impl AgentPlugin for DatabasePlugin {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn load(&self) -> Result<(), PluginError> {
        self.database().map(|_| ())
    }

    fn timeout(&self) -> Option<Duration> {
        self.database.as_ref().ok().map(|db| db.timeout)
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.execute_in(input, CallContext::default()).await
    }

    async fn execute_in(&self, input: Value, context: CallContext) -> Result<Value, PluginError> {
        let database = self.database()?;
        let request = request(&input)?;
        let deadline = context.deadline_for(database.timeout);
        let rows = database
            .query(request.sql, request.params, deadline)
            .await?;
        Ok(if request.json {
            Value::from(rows.to_json())
        } else {
            rows.into_value()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        let sql = Value::from("SELECT 1");
        assert!(request(&sql).expect("a string").json);
        let map = Value::Map(vec![
            (Value::from("sql"), Value::from("SELECT ?")),
            (Value::from("params"), Value::Array(vec![Value::from(1)])),
        ]);
        let parsed = request(&map).expect("a map");
        assert_eq!(
            (parsed.sql, parsed.params.len(), parsed.json),
            ("SELECT ?", 1, false)
        );
        for bad in [
            Value::from(1),
            Value::Map(vec![(Value::from("query"), Value::from("SELECT 1"))]),
            Value::Map(vec![(Value::from("params"), Value::Array(vec![]))]),
            Value::Map(vec![
                (Value::from("sql"), Value::from("SELECT 1")),
                (Value::from("params"), Value::from("x")),
            ]),
        ] {
            let err = request(&bad).err().expect("refused");
            assert_eq!(err.code().as_u16(), 400, "{bad}: {err}");
        }
    }
}
