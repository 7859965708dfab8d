//! The SQLite backend: an embedded database file, created on first use, read through
//! connections opened read-only unless writes are allowed, with a progress handler that
//! interrupts a statement at the request's deadline (SQLite has no statement timeout).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions, Connection, Either, Executor, Row, SqlSafeStr, Sqlite,
    Statement, TypeInfo, ValueRef,
};
use tokio::sync::OnceCell;

use super::rows::{Cell, Rows};
use super::{Failure, Limits};
use crate::plugin::PluginError;
use crate::wire::Value;

/// Virtual-machine steps between two looks at the clock while a statement runs.
const PROGRESS_STEPS: i32 = 1_000;

/// A SQLite database file.
pub struct Lite {
    path: PathBuf,
    name: String,
    limits: Limits,
    pool: OnceCell<SqlitePool>,
}

impl Lite {
    /// The database in `path`; nothing is opened or created before the first statement.
    pub fn new(path: PathBuf, name: String, limits: Limits) -> Lite {
        Lite {
            path,
            name,
            limits,
            pool: OnceCell::new(),
        }
    }

    /// Runs one statement by `deadline`.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Value],
        deadline: Instant,
    ) -> Result<Rows, PluginError> {
        let left = super::time_left(deadline, &self.name)?;
        let pool = self.pool().await?;
        let mut conn = super::acquire(pool, left, &self.limits, classify)
            .await
            .map_err(|failure| failure.into_error(&self.name))?;
        let interrupt = match conn.lock_handle().await {
            Ok(mut handle) => {
                handle.set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline);
                Ok(())
            }
            Err(e) => Err(classify(e)),
        };
        let ran = match interrupt {
            Ok(()) => statement(&mut conn, sql, params, self.limits.max_rows).await,
            Err(failure) => Err(failure),
        };
        ran.map_err(|failure| {
            if matches!(failure, Failure::TooManyRows(_)) {
                // Unread rows: do not give the connection back.
                conn.close_on_drop();
            }
            failure.into_error(&self.name)
        })
    }

    /// Runs `script` (any number of statements), for `mofa sql`.
    pub async fn run_script(&self, script: String) -> Result<(), PluginError> {
        let pool = self.pool().await?;
        sqlx::raw_sql(AssertSqlSafe(script))
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| classify(e).into_error(&self.name))
    }

    /// The pool, made on first use after creating the file if it is missing. A failure is not
    /// remembered: the next request tries again.
    async fn pool(&self) -> Result<&SqlitePool, PluginError> {
        self.pool
            .get_or_try_init(|| async {
                create(&self.path)
                    .await
                    .map_err(|e| classify(e).into_error(&self.name))?;
                let options = SqliteConnectOptions::new()
                    .filename(&self.path)
                    .read_only(!self.limits.allow_writes)
                    .busy_timeout(self.limits.connect_timeout);
                Ok(SqlitePoolOptions::new()
                    .max_connections(self.limits.max_connections)
                    .acquire_timeout(self.limits.connect_timeout)
                    .test_before_acquire(false)
                    .connect_lazy_with(options))
            })
            .await
    }
}

/// Creates the database file (and its directory) unless it exists.
async fn create(path: &Path) -> Result<(), sqlx::Error> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await?;
    conn.close().await
}

/// Prepares `sql`, binds `params` by their own types, and reads at most `max_rows` rows.
async fn statement(
    conn: &mut PoolConnection<Sqlite>,
    sql: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Rows, Failure> {
    let prepared = (&mut **conn)
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(classify)?;
    let wanted = match prepared.parameters() {
        Some(Either::Right(n)) => n,
        Some(Either::Left(types)) => types.len(),
        None => 0,
    };
    if wanted != params.len() {
        return Err(Failure::BadInput(format!(
            "the statement has {wanted} parameter(s) (?) but params has {}",
            params.len()
        )));
    }
    let columns = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut query = prepared.query();
    for (i, value) in params.iter().enumerate() {
        query = bind(query, value, i)?;
    }
    let rows = super::collect(query.fetch(&mut **conn), max_rows, classify, cells).await?;
    Ok(Rows { columns, rows })
}

/// Binds parameter `i` as its own type; SQLite's columns take any type.
fn bind<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    value: &Value,
    i: usize,
) -> Result<Query<'q, Sqlite, SqliteArguments>, Failure> {
    Ok(match value {
        Value::Nil => query.bind(None::<i64>),
        Value::Boolean(b) => query.bind(*b),
        Value::Integer(n) => query.bind(n.as_i64().ok_or_else(|| {
            Failure::BadInput(format!(
                "params[{i}] is {n}, beyond SQLite's 64-bit integers"
            ))
        })?),
        Value::F32(f) => query.bind(f64::from(*f)),
        Value::F64(f) => query.bind(*f),
        Value::String(s) => match s.as_str() {
            Some(text) => query.bind(text.to_string()),
            None => query.bind(s.as_bytes().to_vec()),
        },
        Value::Binary(b) => query.bind(b.clone()),
        // Lists and maps go in as JSON text, for SQLite's JSON functions.
        Value::Array(_) | Value::Map(_) | Value::Ext(..) => {
            query.bind(crate::wire::to_json(value).to_string())
        }
    })
}

fn cells(row: &SqliteRow) -> Result<Vec<Cell>, Failure> {
    (0..row.columns().len()).map(|i| cell(row, i)).collect()
}

/// One cell by the type of the value SQLite stored; an integer in a column declared BOOLEAN
/// is a boolean.
fn cell(row: &SqliteRow, i: usize) -> Result<Cell, Failure> {
    let failed = |e: sqlx::Error| {
        Failure::Internal(format!(
            "column {:?} could not be read: {e}",
            row.columns()[i].name()
        ))
    };
    let raw = row.try_get_raw(i).map_err(failed)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let stored = raw.type_info().name().to_string();
    Ok(match stored.as_str() {
        "INTEGER" | "BOOLEAN" => {
            let n = row.try_get_unchecked::<i64, _>(i).map_err(failed)?;
            let declared = row.columns()[i].type_info().name().to_ascii_uppercase();
            if declared == "BOOLEAN" || declared == "BOOL" {
                Cell::Bool(n != 0)
            } else {
                Cell::Int(n)
            }
        }
        "REAL" => Cell::Float(row.try_get_unchecked::<f64, _>(i).map_err(failed)?),
        "BLOB" => Cell::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i).map_err(failed)?),
        _ => Cell::Text(row.try_get_unchecked::<String, _>(i).map_err(failed)?),
    })
}

/// What a driver error means for the caller, by SQLite's primary result code.
fn classify(e: sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            let message = db.message().to_string();
            match code & 0xff {
                8 => Failure::ReadOnly(message),
                9 => Failure::Timeout,
                5 | 6 => Failure::Unavailable(format!("{message} (the database is locked)")),
                10 | 13 | 14 | 26 | 11 => Failure::Unavailable(message),
                1 | 18 | 19 | 20 | 25 => Failure::BadInput(message),
                _ => Failure::Internal(format!("{message} (SQLite code {code})")),
            }
        }
        other => super::classify_driver(other),
    }
}
