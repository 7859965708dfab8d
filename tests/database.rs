//! The `database` plugin on the embedded SQLite file and on a real PostgreSQL server, reached
//! over a real nats-server: the docs' `analyze_sales` script unchanged, parameters bound by the
//! driver, the read-only default, the deadline, `max_rows`, a database that is down or comes
//! back, and the typed reply.
//!
//! PostgreSQL: `$MOFA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
//! Each test creates its own database with a unique name and drops it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mofa_bus::native::DatabaseConfig;
use mofa_bus::wire::Value;
use sqlx::Connection;

/// Sum of the sample's amounts after 2024-01-01 (see the header of `sales.sql`).
const TOTAL_SALES: f64 = 5175.62;

fn sales_sql() -> std::path::PathBuf {
    repo_plugins().join("examples/sales.sql")
}

/// A PostgreSQL database made for one test, dropped on drop.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin = std::env::var("MOFA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("mofa_test_{}", nuid::next().as_str().to_ascii_lowercase());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("the database tests need PostgreSQL at {admin} (set MOFA_TEST_POSTGRES_URL): {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("database created");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        PgDatabase { admin, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}

/// A PostgreSQL database holding the sample sales, a nats-server and an empty data directory.
async fn postgres_with_sales() -> (PgDatabase, NatsServer, tempfile::TempDir) {
    let pg = PgDatabase::create().await;
    mofa_sql(&sales_sql(), &[("MOFA_DATABASE_URL", &pg.url)]);
    let data = tempfile::tempdir().expect("temp dir");
    (pg, NatsServer::start(), data)
}

/// The default settings for the database at `url`.
fn at(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.into(),
        ..DatabaseConfig::default()
    }
}

/// Runs `mofa sql FILE` with the database given by `env`.
fn mofa_sql(file: &Path, env: &[(&str, &str)]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
        .arg("sql")
        .arg(file)
        .envs(env.iter().copied())
        .env_remove("MOFA_CONFIG")
        .output()
        .expect("mofa runs");
    assert!(
        output.status.success(),
        "mofa sql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A worker serving the repository's `data_analyzer.rhai` (plus `extra` scripts) with the
/// database set by `database`.
async fn start(
    server: &NatsServer,
    data: &Path,
    extra: &[(&str, &str)],
    database: DatabaseConfig,
) -> (mofa_bus::worker::Worker, tempfile::TempDir) {
    let analyzer = std::fs::read_to_string(repo_plugins().join("data_analyzer.rhai"))
        .expect("data_analyzer.rhai");
    let mut files = vec![("data_analyzer.rhai", analyzer.as_str())];
    files.extend_from_slice(extra);
    serve_loaded(server, &files, |c| {
        c.data_dir = data.to_path_buf();
        c.database = database;
    })
    .await
}

/// Calls `data_analyzer` and checks its total against the sample's.
async fn assert_total_sales(client: &async_nats::Client) {
    let reply = call(client, "data_analyzer", Value::Nil)
        .await
        .expect_value();
    let total = total_of(reply);
    assert!((total - TOTAL_SALES).abs() < 1e-6, "total {total}");
}

/// The rows `database` returns for `sql` with `params` (the typed form).
async fn select(
    client: &async_nats::Client,
    sql: &str,
    params: Vec<Value>,
) -> Vec<Vec<(Value, Value)>> {
    rows(
        call(client, "database", query(sql, params))
            .await
            .expect_value(),
    )
}

/// The JSON text `database` returns for `sql` (the string form).
async fn select_json(client: &async_nats::Client, sql: &str) -> String {
    let reply = call(client, "database", Value::from(sql))
        .await
        .expect_value();
    reply.as_str().expect("JSON text").to_string()
}

fn total_of(reply: Value) -> f64 {
    let Value::Map(entries) = reply else {
        panic!("analyze_sales returns a map, got {reply}")
    };
    let (_, total) = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("total_sales"))
        .expect("total_sales");
    total.as_f64().expect("a float")
}

fn query(sql: &str, params: Vec<Value>) -> Value {
    map(&[("sql", Value::from(sql)), ("params", Value::Array(params))])
}

/// The `rows` of a typed reply, as maps.
fn rows(reply: Value) -> Vec<Vec<(Value, Value)>> {
    let Value::Array(rows) = reply else {
        panic!("rows are a list, got {reply}")
    };
    rows.into_iter()
        .map(|row| match row {
            Value::Map(entries) => entries,
            other => panic!("a row is a map, got {other}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analyze_sales_runs_unchanged_on_the_embedded_sqlite_file() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().join("nested/data");
    mofa_sql(
        &sales_sql(),
        &[("MOFA_DATA_DIR", data_dir.to_str().expect("utf-8 path"))],
    );
    assert!(
        data_dir.join("mofa.db").exists(),
        "mofa sql created the file"
    );
    let (_worker, _dir) = start(&server, &data_dir, &[], DatabaseConfig::default()).await;
    let client = server.client().await;
    assert_total_sales(&client).await;

    // The string form answers JSON text, column order kept.
    let json = select_json(&client, "SELECT id, amount FROM sales WHERE id = 7").await;
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed[0]["id"], 7);
    assert!(json.starts_with(r#"[{"id":7,"amount":"#), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analyze_sales_runs_unchanged_on_postgresql() {
    let (pg, server, data) = postgres_with_sales().await;
    let database = at(&pg.url);
    let (_worker, _dir) = start(&server, data.path(), &[], database).await;
    let client = server.client().await;
    assert_total_sales(&client).await;
    // JSON text keeps NUMERIC's digits: 2 decimals for NUMERIC(10, 2).
    let json = select_json(&client, "SELECT id, amount FROM sales WHERE id = 2").await;
    assert_eq!(json, r#"[{"id":2,"amount":217.70}]"#);
    assert!(
        std::fs::read_dir(data.path())
            .expect("data dir")
            .next()
            .is_none(),
        "no SQLite file is made when PostgreSQL is configured"
    );
}

/// Hostile strings are stored and found literally, and writes need `allow_writes`.
async fn hostile_strings_and_the_read_only_default(server: &NatsServer, url: &str, data: &Path) {
    let hostile = "'; DROP TABLE sales; --";
    let writable = DatabaseConfig {
        url: url.into(),
        allow_writes: true,
        ..DatabaseConfig::default()
    };
    let (writer, _dir) = start(server, data, &[], writable).await;
    let client = server.client().await;
    call(
        &client,
        "database",
        query(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
            vec![],
        ),
    )
    .await
    .expect_value();
    let inserted = select(
        &client,
        "INSERT INTO notes (id, body) VALUES ($1, $2) RETURNING id",
        vec![Value::from(1), Value::from(hostile)],
    )
    .await;
    assert_eq!(inserted[0][0].1, Value::from(1));
    let found = select(
        &client,
        "SELECT body FROM notes WHERE body = $1",
        vec![Value::from(hostile)],
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][0].1, Value::from(hostile));
    let count = select(&client, "SELECT count(*) AS n FROM sales", vec![]).await;
    assert_eq!(count[0][0].1, Value::from(20), "sales survived");
    writer.shutdown().await.expect("drained");

    // Read-only (the default): the database refuses the write, with a 400 that says so.
    let read_only = at(url);
    let (_reader, _dir) = start(
        server,
        data,
        &[(
            "writer.rhai",
            r#"fn execute(x) {
                   try { call_plugin("database", "DELETE FROM sales"); }
                   catch (e) { return #{ code: e.code, message: e.message }; }
                   "deleted"
               }"#,
        )],
        read_only,
    )
    .await;
    for sql in [
        "DELETE FROM sales",
        "INSERT INTO notes (id, body) VALUES (2, 'x')",
        "DROP TABLE sales",
    ] {
        expect_error(
            &client,
            "database",
            Value::from(sql),
            400,
            "writes are off",
            Duration::from_secs(5),
        )
        .await;
    }
    let caught = call(&client, "writer", Value::Nil).await.expect_value();
    assert!(caught.to_string().contains("400"), "{caught}");
    assert!(caught.to_string().contains("allow_writes"), "{caught}");
    let count = select(&client, "SELECT count(*) AS n FROM sales", vec![]).await;
    assert_eq!(count[0][0].1, Value::from(20), "nothing was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_binds_hostile_strings_and_refuses_writes_by_default() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("temp dir");
    let file = data.path().join("app.db");
    let url = format!("sqlite://{}", file.display());
    mofa_sql(&sales_sql(), &[("MOFA_DATABASE_URL", &url)]);
    hostile_strings_and_the_read_only_default(&server, &url, data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_binds_hostile_strings_and_refuses_writes_by_default() {
    let (pg, server, data) = postgres_with_sales().await;
    hostile_strings_and_the_read_only_default(&server, &pg.url, data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_statements_end_at_the_deadline_and_max_rows_is_a_413() {
    let (pg, server, data) = postgres_with_sales().await;
    let sqlite = format!("sqlite://{}", data.path().join("lite.db").display());
    mofa_sql(&sales_sql(), &[("MOFA_DATABASE_URL", &sqlite)]);
    let endless =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    for (url, slow) in [
        (pg.url.as_str(), "SELECT pg_sleep(10)"),
        (sqlite.as_str(), endless),
    ] {
        let database = DatabaseConfig {
            url: url.into(),
            timeout_ms: 300,
            max_rows: 5,
            ..DatabaseConfig::default()
        };
        let (worker, _dir) = start(&server, data.path(), &[], database).await;
        let client = server.client().await;
        let started = Instant::now();
        expect_error(
            &client,
            "database",
            Value::from(slow),
            408,
            "deadline",
            Duration::from_secs(2),
        )
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{url}: ran until the deadline"
        );
        // The pool is fine afterwards.
        let five = select(&client, "SELECT id FROM sales ORDER BY id LIMIT 5", vec![]).await;
        assert_eq!(five.len(), 5, "{url}");
        expect_error(
            &client,
            "database",
            Value::from("SELECT * FROM sales"),
            413,
            "max_rows = 5",
            Duration::from_secs(5),
        )
        .await;
        let again = select(&client, "SELECT count(*) AS n FROM sales", vec![]).await;
        assert_eq!(again[0][0].1, Value::from(20), "{url}");
        // A script's own, earlier deadline wins over database.timeout_ms.
        worker.shutdown().await.expect("drained");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_calling_scripts_deadline_bounds_the_statement() {
    let pg = PgDatabase::create().await;
    let server = NatsServer::start();
    let data = tempfile::tempdir().expect("temp dir");
    let database = DatabaseConfig {
        url: pg.url.clone(),
        timeout_ms: 10_000,
        ..DatabaseConfig::default()
    };
    let dir = plugins_dir(&[(
        "sleepy.rhai",
        r#"fn execute(x) {
               try { call_plugin("database", "SELECT pg_sleep(5)"); }
               catch (e) { return e.code; }
               0
           }"#,
    )]);
    let mut cfg = config(&server, dir.path());
    cfg.data_dir = data.path().to_path_buf();
    cfg.database = database;
    cfg.rhai.timeout_ms = 400;
    let _worker = worker(cfg).await;
    let client = server.client().await;
    let started = Instant::now();
    let reply = call(&client, "sleepy", Value::Nil).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Either the script caught the 408, or its own deadline ended it with one.
    match reply {
        Reply::Ok(code) => assert_eq!(code, Value::from(408)),
        other => assert_eq!(other.code(), Some(408), "{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_values_come_back_typed_and_params_take_the_inferred_types() {
    let (pg, server, data) = postgres_with_sales().await;
    let database = at(&pg.url);
    let (_worker, _dir) = start(&server, data.path(), &[], database).await;
    let client = server.client().await;
    let row = select(&client, "SELECT 1::int4 AS i, 12345678901234567890.125::numeric AS n, 'x'::text AS t, true AS b, \
                 NULL::int AS z, '\\x00ff'::bytea AS by, '2024-01-02 03:04:05.5+00'::timestamptz AS ts, \
                 '2024-01-02 03:04:05'::timestamp AS lt, '2024-01-02'::date AS d, 1.5::float8 AS f, \
                 '{\"a\": [1, 2]}'::jsonb AS j, 12.50::numeric(10, 2) AS m, 'NaN'::numeric AS nan", vec![]).await
    .remove(0);
    let expected = [
        ("i", Value::from(1)),
        ("n", Value::from("12345678901234567890.125")),
        ("t", Value::from("x")),
        ("b", Value::Boolean(true)),
        ("z", Value::Nil),
        ("by", Value::Binary(vec![0, 255])),
        ("ts", Value::from("2024-01-02T03:04:05.500Z")),
        ("lt", Value::from("2024-01-02T03:04:05")),
        ("d", Value::from("2024-01-02")),
        ("f", Value::F64(1.5)),
        (
            "j",
            map(&[("a", Value::Array(vec![Value::from(1), Value::from(2)]))]),
        ),
        ("m", Value::from("12.50")),
        ("nan", Value::from("NaN")),
    ];
    let got: Vec<(String, Value)> = row
        .into_iter()
        .map(|(k, v)| (k.as_str().expect("name").to_string(), v))
        .collect();
    let want: Vec<(String, Value)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(got, want);

    // Strings become dates, integers numerics, nil NULL: as the server inferred for $n.
    let found = select(
        &client,
        "SELECT count(*) AS n FROM sales WHERE date > $1 AND amount > $2 AND ($3::text IS NULL)",
        vec![Value::from("2024-01-01"), Value::from(0), Value::Nil],
    )
    .await;
    assert_eq!(found[0][0].1, Value::from(14));
    // A value the statement cannot take there is a 400 naming the parameter and the type.
    expect_error(
        &client,
        "database",
        query(
            "SELECT count(*) FROM sales WHERE date > $1",
            vec![Value::from(5)],
        ),
        400,
        "params[0] ($1) is an integer, but the statement needs DATE",
        Duration::from_secs(5),
    )
    .await;
    expect_error(
        &client,
        "database",
        query("SELECT $1::int + $2::int", vec![Value::from(1)]),
        400,
        "2 parameter(s)",
        Duration::from_secs(5),
    )
    .await;
    expect_error(
        &client,
        "database",
        Value::from("SELEC 1"),
        400,
        "syntax error",
        Duration::from_secs(5),
    )
    .await;
}

/// Forwards TCP connections from a local port to `target` until stopped; restartable on the
/// same port, to take a database away from a worker and give it back.
struct Proxy {
    port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut proxy = Proxy {
            port,
            target: target.to_string(),
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the port and every forwarded connection.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is free again");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_is_down_is_a_503_and_the_worker_reconnects_by_itself() {
    let (pg, server, data) = postgres_with_sales().await;

    // Nothing listens at the configured address: 503 naming it, the rest keeps serving.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let nowhere = format!("postgres://postgres:secret@127.0.0.1:{port}/sales");
    let database = DatabaseConfig {
        url: nowhere,
        connect_timeout_ms: 500,
        ..DatabaseConfig::default()
    };
    let (worker, _dir) = start(&server, data.path(), &[], database).await;
    let client = server.client().await;
    let reply = call(&client, "data_analyzer", Value::Nil).await;
    assert_eq!(reply.code(), Some(503), "{reply:?}");
    let message = reply.message();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/sales")),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "the password stays out of replies: {message}"
    );
    assert_eq!(
        call(&client, "echo", Value::from(1)).await.expect_value(),
        Value::from(1)
    );
    worker.shutdown().await.expect("drained");

    // The database goes away and comes back: 503 meanwhile, then served again with no restart.
    let (host, rest) = pg
        .url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .expect("url host and database");
    let mut proxy = Proxy::start(host).await;
    let through = format!("postgres://postgres@127.0.0.1:{}/{rest}", proxy.port);
    let database = DatabaseConfig {
        url: through,
        connect_timeout_ms: 500,
        ..DatabaseConfig::default()
    };
    let (_worker, _dir) = start(&server, data.path(), &[], database).await;
    assert_total_sales(&client).await;
    proxy.stop().await;
    let reply = call(&client, "data_analyzer", Value::Nil).await;
    assert_eq!(reply.code(), Some(503), "{reply:?}");
    assert_eq!(
        call(&client, "echo", Value::from(2)).await.expect_value(),
        Value::from(2)
    );
    proxy.restart().await;
    assert_total_sales(&client).await;
}
