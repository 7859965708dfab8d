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
use mofa_bus::config::WorkerConfig;
use mofa_bus::{subjects, wire};

mod cmd;

use cmd::connect::{BucketArgs, Nats, NatsArgs};
use cmd::worker::DatabaseArgs;

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
    /// Serve every plugin on the bus until SIGTERM or SIGINT, then drain.
    ///
    /// Serves the native plugins compiled in (echo, discount_native, database), every plugin
    /// file in the plugins directory (*.rhai scripts, also in tools/, rules/ and scripts/;
    /// *.wasm modules with their *.toml manifests) and every plugin published to the bus, each
    /// on mofa.exec.<plugin> in queue group "mofa". Logs go to stderr (RUST_LOG=debug for
    /// more; colour only on a terminal).
    ///
    /// Exit status: 0 the drain was clean, 3 the drain timeout passed first, 130 a second
    /// signal cut it short, 2 the worker could not start.
    #[command(after_help = "Examples:\n  \
        mofa worker --dev                       # every feature, a current nats-server if needed\n  \
        mofa worker --dev --fresh               # the same, its dev server's store emptied first\n  \
        mofa worker --nats nats://a:4222,nats://b:4222 --config worker.toml --name w1")]
    Worker(cmd::worker::WorkerArgs),
    /// Run a SQL file (a schema, sample data) on the database the `database` plugin uses,
    /// with writes allowed: the embedded SQLite file in the data directory unless
    /// `--database-url`, `MOFA_DATABASE_URL` or the config file's `[database] url` names one.
    #[command(after_help = "Examples:\n  \
        mofa sql plugins/examples/sales.sql\n  \
        mofa sql schema.sql --database-url postgres://postgres@127.0.0.1/app")]
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
    #[command(after_help = "Examples:\n  \
        mofa exec discount '{\"price\": 100, \"customer_tier\": \"gold\"}'   # 80.0\n  \
        mofa exec echo '[1, 2]' --verbose       # trace id, revision and round trip on stderr\n  \
        mofa exec discount '{\"price\": 5}' --route-key customer-42 --timeout 500ms")]
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
    #[command(after_help = "Examples:\n  \
        mofa submit discount '{\"price\": 100, \"customer_tier\": \"gold\"}' --wait\n  \
        mofa submit report '{\"month\": 11}' --id report-2026-11   # once per id\n  \
        mofa job report-2026-11")]
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
    #[command(after_help = "Examples:\n  \
        mofa job report-2026-11\n  \
        mofa job report-2026-11 --wait 30s      # until it is done or failed")]
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
    #[command(after_help = "Examples:\n  \
        mofa dlq                                # every dead letter\n  \
        mofa dlq report --replay                # run report's dead letters again\n  \
        mofa dlq --replay --seq 17              # only the one at sequence 17")]
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
    ///
    /// Each file is first built exactly as a worker builds it (compiled, its top level run,
    /// its manifest and limits checked) and its test cases (FILE.test.toml) run; if any file
    /// fails either, nothing is published. Exit status: 0 published, 1 nothing published (a
    /// file does not build or a case failed), 2 NATS or the bucket is unreachable.
    #[command(after_help = "Examples:\n  \
        mofa publish plugins/discount.rhai\n  \
        mofa publish plugins/discount_wasm.wasm --version 1.4.0 --sign signing.nk\n  \
        mofa publish plugins/discount.rhai --canary 10 --max-error-rate 5")]
    Publish {
        /// Files to publish; each plugin is named after its file stem (a tool after its name).
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
    #[command(after_help = "Examples:\n  \
        mofa run plugins/discount.rhai '{\"price\": 100, \"customer_tier\": \"gold\"}'\n  \
        mofa run plugins/wordcount.wasm '{\"text\": \"the cat\"}'\n  \
        mofa run plugins/data_analyzer.rhai --data-dir /tmp/shop")]
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
    /// Build plugins as a worker would and run their test cases: FILE.test.toml beside
    /// FILE.rhai or FILE.wasm (see docs/scripts.md). Each case file runs on a fresh embedded
    /// SQLite database, with its `sql` files loaded.
    ///
    /// Exit status: 0 every plugin builds and every case passed, 1 a plugin does not build, a
    /// case failed or a case file is broken.
    #[command(after_help = "Examples:\n  \
        mofa test                               # every plugin in the plugins directory\n  \
        mofa test plugins/discount.rhai\n  \
        mofa test plugins/rules/ --config worker.toml")]
    Test {
        /// Plugin files, case files or directories [default: the plugins directory].
        paths: Vec<PathBuf>,
        /// The worker configuration whose limits apply.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Make the canary of PLUGIN the only revision (its exact record, without the canary);
    /// or, with --from and --to, copy the revision serving in one environment to another
    /// (same code, SHA-256 and signature), once it builds as a worker would build it.
    #[command(after_help = "Examples:\n  \
        mofa promote discount                   # the canary serves everything\n  \
        mofa promote discount --from staging --to production")]
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
    #[command(after_help = "Examples:\n  \
        mofa canary discount\n  \
        mofa canary discount --for 1m --json")]
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
    #[command(after_help = "Examples:\n  \
        mofa keygen --out signing.nk            # then: mofa publish FILE --sign signing.nk")]
    Keygen {
        /// File to write the seed to (created with mode 600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Watch a directory and publish each changed script or module once its writes settle,
    /// after it builds as a worker would and its test cases (FILE.test.toml) pass, as `mofa
    /// publish` does. One line per change: published, failed (with the reason), or fixed.
    #[command(after_help = "Examples:\n  \
        mofa watch plugins\n  \
        mofa watch plugins --debounce 1s --no-test")]
    Watch {
        /// Directory of .rhai, .wasm and .toml files.
        dir: PathBuf,
        /// Quiet time after the last write before a file is published (trailing debounce).
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        debounce: Duration,
        /// Publish without running the test cases (each file is still built first).
        #[arg(long)]
        no_test: bool,
        /// The worker configuration whose limits the builds and test cases run under.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Republish an earlier revision of a plugin (default: the one before the current); when
    /// a canary runs, drop it (its stable revision serves everything again).
    ///
    /// Exit status: 0 rolled back, 1 the plugin is not published, 2 anything else failed.
    #[command(after_help = "Examples:\n  \
        mofa rollback discount\n  \
        mofa rollback discount --to 3           # see `mofa history discount`")]
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
    ///
    /// Exit status: 0 removed, 1 the plugin is not published (nothing to remove).
    #[command(after_help = "Examples:\n  \
        mofa remove vat")]
    Remove {
        /// Plugin name.
        plugin: String,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List the stored revisions of a plugin, oldest first, as a table (times in UTC).
    ///
    /// Exit status: 0 listed, 1 the plugin was never published.
    #[command(after_help = "Examples:\n  \
        mofa history discount\n  \
        mofa history discount --json            # raw fields, one JSON object per revision")]
    History {
        /// Plugin name.
        plugin: String,
        /// Print JSON lines with the raw fields instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List the plugins every live worker serves, with kind and revision (Services API INFO).
    #[command(after_help = "Examples:\n  \
        mofa plugins\n  \
        mofa plugins --json --wait 2s")]
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
    #[command(after_help = "Examples:\n  \
        mofa stats\n  \
        mofa stats --json")]
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
    /// Ask workers whether they are up (Services API PING): this host's worker (--self), one
    /// worker by id, or any.
    ///
    /// --self takes $MOFA_WORKER_ID when set, else the one running worker that recorded its
    /// id in the data directory (several: name one). Exit status: 0 an answer came within
    /// --timeout (printed as JSON), 1 none did, 2 NATS is unreachable. For health checks and
    /// Kubernetes probes.
    #[command(after_help = "Examples:\n  \
        mofa ping                               # any worker\n  \
        mofa ping w1 --timeout 1s\n  \
        mofa ping --self                        # a container's health check")]
    Ping {
        /// Worker id; omitted: any worker.
        worker: Option<String>,
        /// This host's worker: $MOFA_WORKER_ID, else the worker recorded in the data directory.
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
    #[command(after_help = "Examples:\n  \
        mofa tools --format openai\n  \
        mofa tools --format anthropic")]
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
    #[command(after_help = "Examples:\n  \
        mofa mcp                                # started by an MCP client, not by hand\n  \
        mofa mcp --nats nats://10.0.0.5:4222 --timeout 60s")]
    Mcp {
        /// How long a tool call may take.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print events as JSON lines: result events of one plugin, or every event.
    #[command(after_help = "Examples:\n  \
        mofa events                             # every event, until Ctrl-C\n  \
        mofa events discount | jq .duration_us")]
    Events {
        /// Plugin name; omitted: all plugins and all event kinds (mofa.events.>).
        plugin: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
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
        Command::Worker(args) => args
            .config
            .as_deref()
            .and_then(|path| WorkerConfig::from_file(path).ok()),
        _ => None,
    }
}

/// The async runtime: for the worker, `async_threads` threads (flag, else config file, else
/// one per core, see [`mofa_bus::worker::runtime`]); for the other verbs, one per core.
fn runtime(cli: &Cli, file: Option<&WorkerConfig>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match &cli.command {
        Command::Worker(args) => args
            .async_threads
            .unwrap_or_else(|| file.map_or(0, |config| config.async_threads)),
        _ => 0,
    };
    mofa_bus::worker::runtime::build(threads)
}

/// Logs to stderr, and OpenTelemetry export when configured (the worker's config file's
/// `[telemetry]` section, or the standard `OTEL_*` variables for every command).
fn init_telemetry(cli: &Cli, file: Option<&WorkerConfig>) -> mofa_bus::telemetry::Telemetry {
    use mofa_bus::telemetry::{Setup, TelemetryConfig};
    // The worker logs its progress; client commands print only their results and warnings.
    // async-nats logs every connection event at info (`event: connected`, each failed
    // reconnect): the worker says what matters itself, naming the server.
    let (default_filter, service_name) = match &cli.command {
        Command::Worker(_) => ("info,async_nats=warn", "mofa-worker"),
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

/// Hands each verb to its file in `cmd/`; an error it returns is printed once, exit 2.
async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Worker(args) => cmd::worker::worker(args).await,
        Command::Sql {
            file,
            config,
            database,
        } => cmd::worker::sql(&file, config, database).await,
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
            let config = match config {
                Some(path) => WorkerConfig::from_file(&path),
                None => Ok(WorkerConfig::default()),
            };
            match (config, bucket.open().await) {
                (Ok(config), Ok(distribution)) => {
                    cmd::watch::watch(distribution, &dir, debounce, config, no_test).await
                }
                (Err(e), _) => Err(e.into()),
                (_, Err(e)) => Err(e),
            }
        }
        Command::Rollback { plugin, to, nats } => {
            cmd::bucket::rollback(&nats.resolve(), &plugin, to).await
        }
        Command::Remove { plugin, nats } => cmd::bucket::remove(&nats.resolve(), &plugin).await,
        Command::History { plugin, json, nats } => {
            cmd::bucket::history(&nats.resolve(), &plugin, json).await
        }
        Command::Plugins { wait, json, nats } => {
            cmd::fleet::plugins(&nats.resolve(), wait, json).await
        }
        Command::Stats { wait, json, nats } => cmd::fleet::stats(&nats.resolve(), wait, json).await,
        Command::Ping {
            worker,
            this,
            data_dir,
            timeout,
            nats,
        } => {
            let options = cmd::fleet::PingOptions {
                worker,
                this,
                data_dir,
                timeout,
            };
            cmd::fleet::ping(&nats.resolve(), options).await
        }
        Command::Tools { format, wait, nats } => {
            cmd::fleet::tools(&nats.resolve(), format, wait).await
        }
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
                RequestErrorKind::NoResponders => format!(
                    "no worker serves plugin {plugin:?} (no responders on {subject} at {})",
                    nats.shown()
                ),
                RequestErrorKind::TimedOut => format!(
                    "no reply from plugin {plugin:?} within {} (asked on {subject} at {})",
                    humantime::format_duration(timeout),
                    nats.shown()
                ),
                _ => format!(
                    "the request on {subject} at {} failed: {}",
                    nats.shown(),
                    mofa_bus::connection::cause(&e)
                ),
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
