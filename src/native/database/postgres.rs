//! The PostgreSQL backend: a bounded, lazily connecting pool; one transaction per statement,
//! read-only unless writes are allowed, with `statement_timeout` set to the request's deadline.
//!
//! Parameters are bound by the driver in the types the server inferred for them when it
//! prepared the statement, so `WHERE date > $1` takes the string `"2024-01-01"` as a date
//! without a cast, and a value never becomes part of the SQL text.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgTypeInfo, PgTypeKind,
};
use sqlx::query::Query;
use sqlx::types::{BigDecimal, Json, Uuid};
use sqlx::{
    AssertSqlSafe, Column, Either, Executor, Postgres, Row, SqlSafeStr, Statement, TypeInfo,
    ValueRef,
};

use super::rows::{Cell, Rows};
use super::{param_kind, Failure, Limits};
use crate::plugin::PluginError;
use crate::wire::Value;

/// Extra time the client waits past the deadline for the server's own `statement_timeout`
/// error before it gives up on the connection.
const GRACE: Duration = Duration::from_millis(250);

/// A PostgreSQL database.
pub struct Pg {
    pool: PgPool,
    name: String,
    limits: Limits,
}

impl Pg {
    /// A pool for `url`; it connects on first use and reconnects by itself.
    pub fn new(url: &str, name: String, limits: Limits) -> Result<Pg, String> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| format!("database.url {name}: {e}"))?
            .application_name("mofa-bus");
        let pool = PgPoolOptions::new()
            .max_connections(limits.max_connections)
            .acquire_timeout(limits.connect_timeout)
            // A stale connection (the server restarted) fails at BEGIN and is replaced there,
            // which saves a ping on every request.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Pg { pool, name, limits })
    }

    /// Runs one statement by `deadline`.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Value],
        deadline: Instant,
    ) -> Result<Rows, PluginError> {
        let mut conn = self.begin(deadline).await?;
        let ran = tokio::time::timeout_at(
            (deadline + GRACE).into(),
            statement(&mut conn, sql, params, self.limits.max_rows),
        )
        .await;
        let end = if self.limits.allow_writes {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        match ran {
            Ok(Ok(rows)) => match sqlx::raw_sql(end).execute(&mut *conn).await {
                Ok(_) => Ok(rows),
                Err(e) => Err(classify(e).into_error(&self.name)),
            },
            Ok(Err(failure)) => {
                if matches!(failure, Failure::TooManyRows(_))
                    || sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_err()
                {
                    // Unread rows or a broken session: do not give the connection back.
                    conn.close_on_drop();
                }
                Err(failure.into_error(&self.name))
            }
            Err(_) => {
                conn.close_on_drop();
                Err(Failure::Timeout.into_error(&self.name))
            }
        }
    }

    /// Runs `script` (any number of statements) with writes allowed, for `mofa sql`.
    pub async fn run_script(&self, script: String) -> Result<(), PluginError> {
        sqlx::raw_sql(AssertSqlSafe(script))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| classify(e).into_error(&self.name))
    }

    /// A connection inside a fresh transaction whose statement timeout is the time left.
    /// A pooled connection that turns out dead is dropped and another one tried, once.
    async fn begin(&self, deadline: Instant) -> Result<PoolConnection<Postgres>, PluginError> {
        let mut last = None;
        for _ in 0..2 {
            let left = super::time_left(deadline, &self.name)?;
            let mut conn = super::acquire(&self.pool, left, &self.limits, classify)
                .await
                .map_err(|failure| failure.into_error(&self.name))?;
            let mode = if self.limits.allow_writes {
                "READ WRITE"
            } else {
                "READ ONLY"
            };
            let begin = format!(
                "BEGIN {mode}; SET LOCAL statement_timeout = {}",
                left.as_millis().max(1)
            );
            match sqlx::raw_sql(AssertSqlSafe(begin))
                .execute(&mut *conn)
                .await
            {
                Ok(_) => return Ok(conn),
                Err(e) => {
                    conn.close_on_drop();
                    last = Some(classify(e));
                }
            }
        }
        Err(last
            .unwrap_or(Failure::NoConnection(self.limits.connect_timeout))
            .into_error(&self.name))
    }
}

/// Prepares `sql`, binds `params` in the types the server inferred, and reads at most
/// `max_rows` rows.
async fn statement(
    conn: &mut PoolConnection<Postgres>,
    sql: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Rows, Failure> {
    let prepared = (&mut **conn)
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(classify)?;
    let types: Vec<PgTypeInfo> = match prepared.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    };
    if types.len() != params.len() {
        return Err(Failure::BadInput(format!(
            "the statement has {} parameter(s) ($1…) but params has {}",
            types.len(),
            params.len()
        )));
    }
    let columns = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut query = prepared.query();
    for (i, (ty, value)) in types.iter().zip(params).enumerate() {
        query = bind(query, ty, value, i)?;
    }
    let rows = super::collect(query.fetch(&mut **conn), max_rows, classify, cells).await?;
    Ok(Rows { columns, rows })
}

/// The name of the type values of `ty` are read and written as: a domain's base type; an
/// enum's labels are text.
fn base_name(ty: &PgTypeInfo) -> String {
    match ty.kind() {
        PgTypeKind::Domain(base) => base_name(base),
        PgTypeKind::Enum(_) => "TEXT".into(),
        _ if ty.name().eq_ignore_ascii_case("citext") => "TEXT".into(),
        _ => ty.name().to_string(),
    }
}

/// Binds parameter `i` (`$i+1`) as the type the statement needs there.
fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    ty: &PgTypeInfo,
    value: &Value,
    i: usize,
) -> Result<Query<'q, Postgres, PgArguments>, Failure> {
    let name = base_name(ty);
    let wrong = || {
        Failure::BadInput(format!(
            "params[{i}] (${}) is {}, but the statement needs {} there",
            i + 1,
            param_kind(value),
            ty.name()
        ))
    };
    let text = || value.as_str().ok_or_else(wrong);
    let parse = |what: &str, e: &dyn std::fmt::Display| {
        Failure::BadInput(format!(
            "params[{i}] (${}) is not a valid {what}: {e}",
            i + 1
        ))
    };
    let int = || match value {
        Value::Integer(n) => n.as_i64().ok_or_else(wrong),
        _ => Err(wrong()),
    };
    let float = || match value {
        Value::Integer(n) => n.as_f64().ok_or_else(wrong),
        Value::F32(f) => Ok(f64::from(*f)),
        Value::F64(f) => Ok(*f),
        _ => Err(wrong()),
    };
    let null = matches!(value, Value::Nil);
    macro_rules! put {
        ($ty:ty, $convert:expr) => {
            if null {
                query.bind(None::<$ty>)
            } else {
                let converted: $ty = $convert;
                query.bind(Some(converted))
            }
        };
    }
    Ok(match name.as_str() {
        "BOOL" => put!(bool, value.as_bool().ok_or_else(wrong)?),
        "INT2" => put!(i16, i16::try_from(int()?).map_err(|_| wrong())?),
        "INT4" => put!(i32, i32::try_from(int()?).map_err(|_| wrong())?),
        "INT8" => put!(i64, int()?),
        "FLOAT4" => put!(f32, float()? as f32),
        "FLOAT8" => put!(f64, float()?),
        "NUMERIC" => put!(BigDecimal, {
            let digits = match value {
                Value::String(_) => text()?.to_string(),
                Value::Integer(n) => n.to_string(),
                _ => float()?.to_string(),
            };
            BigDecimal::from_str(&digits).map_err(|e| parse("number", &e))?
        }),
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" => put!(String, text()?.to_string()),
        "BYTEA" => put!(Vec<u8>, match value {
            Value::Binary(b) => b.clone(),
            _ => return Err(wrong()),
        }),
        "DATE" => put!(NaiveDate, NaiveDate::from_str(text()?).map_err(|e| parse("date (YYYY-MM-DD)", &e))?),
        "TIME" => put!(NaiveTime, NaiveTime::from_str(text()?).map_err(|e| parse("time (HH:MM:SS)", &e))?),
        "TIMESTAMP" => put!(NaiveDateTime, {
            let t = text()?;
            NaiveDateTime::from_str(&t.replacen(' ', "T", 1))
                .map_err(|e| parse("timestamp (YYYY-MM-DDTHH:MM:SS)", &e))?
        }),
        "TIMESTAMPTZ" => put!(DateTime<Utc>, {
            let t = text()?;
            DateTime::parse_from_rfc3339(&t.replacen(' ', "T", 1))
                .map_err(|e| parse("timestamp with time zone (RFC 3339)", &e))?
                .with_timezone(&Utc)
        }),
        "UUID" => put!(Uuid, Uuid::from_str(text()?).map_err(|e| parse("UUID", &e))?),
        "JSON" | "JSONB" => put!(Json<serde_json::Value>, Json(crate::wire::to_json(value))),
        other => {
            return Err(Failure::BadInput(format!(
                "params[{i}] (${}) has type {other}, which the database plugin cannot bind; cast it in SQL (${}::text)",
                i + 1,
                i + 1
            )))
        }
    })
}

/// Reads one row's cells by each column's type.
fn cells(row: &PgRow) -> Result<Vec<Cell>, Failure> {
    (0..row.columns().len()).map(|i| cell(row, i)).collect()
}

fn cell(row: &PgRow, i: usize) -> Result<Cell, Failure> {
    let column = &row.columns()[i];
    let ty = column.type_info();
    let failed = |e: sqlx::Error| {
        Failure::Internal(format!(
            "column {:?} ({}) could not be read: {e}; cast it in SQL (::text)",
            column.name(),
            ty.name()
        ))
    };
    macro_rules! get {
        ($ty:ty, $cell:expr) => {
            match row.try_get_unchecked::<Option<$ty>, _>(i).map_err(failed)? {
                None => Cell::Null,
                Some(v) => $cell(v),
            }
        };
    }
    Ok(match base_name(ty).as_str() {
        "BOOL" => get!(bool, Cell::Bool),
        "INT2" => get!(i16, |v| Cell::Int(i64::from(v))),
        "INT4" => get!(i32, |v| Cell::Int(i64::from(v))),
        "INT8" => get!(i64, Cell::Int),
        "OID" => get!(sqlx::postgres::types::Oid, |v: sqlx::postgres::types::Oid| Cell::Int(i64::from(v.0))),
        "FLOAT4" => get!(f32, |v| Cell::Float(f64::from(v))),
        "FLOAT8" => get!(f64, Cell::Float),
        "NUMERIC" => numeric(row, i).map_err(failed)?,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" => get!(String, Cell::Text),
        "BYTEA" => get!(Vec<u8>, Cell::Bytes),
        "DATE" => get!(NaiveDate, |v: NaiveDate| Cell::Text(v.to_string())),
        "TIME" => get!(NaiveTime, |v: NaiveTime| Cell::Text(v.format("%H:%M:%S%.f").to_string())),
        "TIMESTAMP" => get!(NaiveDateTime, |v: NaiveDateTime| Cell::Text(
            v.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
        )),
        "TIMESTAMPTZ" => get!(DateTime<Utc>, |v: DateTime<Utc>| Cell::Text(
            v.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )),
        "UUID" => get!(Uuid, |v: Uuid| Cell::Text(v.to_string())),
        "JSON" | "JSONB" => get!(Json<serde_json::Value>, |v: Json<serde_json::Value>| Cell::Json(v.0)),
        other => {
            return Err(Failure::BadInput(format!(
                "column {:?} has type {other}, which the database plugin cannot convert; cast it in SQL ({}::text)",
                column.name(),
                column.name()
            )))
        }
    })
}

/// A NUMERIC as PostgreSQL itself prints it: every digit of its display scale (`12.50`, not
/// `12.5000`), and `NaN` / `Infinity` / `-Infinity`.
///
/// sqlx's decimal types drop the display scale and refuse the special values, so the header
/// of the binary form (ndigits, weight, sign, dscale: four big-endian 16-bit fields) is read
/// here for those two things; the digits themselves are decoded by sqlx.
fn numeric(row: &PgRow, i: usize) -> Result<Cell, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let header = raw
        .as_bytes()
        .ok()
        .and_then(|bytes| bytes.get(..8))
        .map(|h| {
            (
                u16::from_be_bytes([h[4], h[5]]),
                i16::from_be_bytes([h[6], h[7]]),
            )
        });
    let Some((sign, scale)) = header else {
        return Err(sqlx::Error::Decode(
            "NUMERIC value shorter than its header".into(),
        ));
    };
    let special = match sign {
        0xC000 => Some("NaN"),
        0xD000 => Some("Infinity"),
        0xF000 => Some("-Infinity"),
        _ => None,
    };
    if let Some(special) = special {
        return Ok(Cell::Decimal(special.to_string()));
    }
    let value: BigDecimal = row.try_get_unchecked(i)?;
    Ok(Cell::Decimal(
        value.with_scale(i64::from(scale.max(0))).to_plain_string(),
    ))
}

/// What a driver error means for the caller, by SQLSTATE.
fn classify(e: sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = db.message().to_string();
            match code.as_str() {
                "25006" => Failure::ReadOnly(message),
                "57014" => Failure::Timeout,
                // Connection exceptions, insufficient resources, operator intervention.
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                    Failure::Unavailable(message)
                }
                // Syntax and access rules, data exceptions, integrity constraints, and
                // invalid transaction states caused by the statement itself.
                c if ["42", "22", "23", "2B", "2D", "25", "0A", "44", "21"]
                    .iter()
                    .any(|class| c.starts_with(class)) =>
                {
                    Failure::BadInput(format!("{message} (SQLSTATE {code})"))
                }
                _ => Failure::Internal(format!("{message} (SQLSTATE {code})")),
            }
        }
        other => super::classify_driver(other),
    }
}
