//! `mofa`: the command-line entry point.
//!
//! - `mofa worker` serves plugins on the bus until SIGTERM/SIGINT, then drains.
//! - `mofa exec PLUGIN [JSON]` sends one request and prints the reply as JSON.
//! - `mofa events [PLUGIN]` prints events as JSON lines.

mod dev;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use mofa_bus::config::{WorkerConfig, DEFAULT_NATS_URL};
use mofa_bus::{subjects, wire};

/// mofa-bus: serve native, Rhai and WASM plugins on NATS subjects `mofa.exec.<plugin>`.
#[derive(Parser, Debug)]
#[command(name = "mofa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve every plugin on the bus until SIGTERM or SIGINT, then drain and exit 0.
    ///
    /// Native plugins compiled in (echo, discount_native) and every *.rhai file in the plugins
    /// directory are served on mofa.exec.<plugin> in queue group "mofa". Logs go to stderr;
    /// set RUST_LOG (e.g. RUST_LOG=debug) for more.
    Worker {
        /// NATS server URL.
        #[arg(long, env = "MOFA_NATS_URL")]
        nats: Option<String>,
        /// Directory of *.rhai plugins.
        #[arg(long, env = "MOFA_PLUGINS_DIR")]
        plugins: Option<PathBuf>,
        /// Worker id (also the Services API instance id); [A-Za-z0-9_-]+. Generated if absent.
        #[arg(long)]
        name: Option<String>,
        /// TOML configuration file (limits, concurrency, events); flags override it.
        #[arg(long, env = "MOFA_CONFIG")]
        config: Option<PathBuf>,
        /// If no NATS server answers at the URL, start a local nats-server with JetStream for
        /// the life of the worker.
        #[arg(long)]
        dev: bool,
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
        /// NATS server URL.
        #[arg(long, env = "MOFA_NATS_URL", default_value = DEFAULT_NATS_URL)]
        nats: String,
    },
    /// Print events as JSON lines: result events of one plugin, or every event.
    Events {
        /// Plugin name; omitted: all plugins and all event kinds (mofa.events.>).
        plugin: Option<String>,
        /// NATS server URL.
        #[arg(long, env = "MOFA_NATS_URL", default_value = DEFAULT_NATS_URL)]
        nats: String,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The worker logs its progress; client commands print only their results and warnings.
    init_logging(match cli.command {
        Command::Worker { .. } => "info",
        _ => "warn",
    });
    let result = match cli.command {
        Command::Worker {
            nats,
            plugins,
            name,
            config,
            dev,
        } => worker(nats, plugins, name, config, dev).await,
        Command::Exec {
            plugin,
            input,
            timeout,
            nats,
        } => exec(&nats, &plugin, input.as_deref(), timeout).await,
        Command::Events { plugin, nats } => events(&nats, plugin.as_deref()).await,
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
    nats: Option<String>,
    plugins: Option<PathBuf>,
    name: Option<String>,
    config_file: Option<PathBuf>,
    dev: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = match &config_file {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    if let Some(nats) = nats {
        config.nats_url = nats;
    }
    if let Some(plugins) = plugins {
        config.plugins_dir = plugins;
    }
    if name.is_some() {
        config.worker_id = name;
    }
    let _server = if dev {
        dev::ensure_nats(&config.nats_url).await?
    } else {
        None
    };
    let worker = mofa_bus::worker::Worker::start(config).await?;
    for failure in worker.load_failures() {
        eprintln!(
            "warning: {} not served: {}",
            failure.path.display(),
            failure.error
        );
    }
    mofa_bus::worker::shutdown::signal().await;
    worker.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

async fn exec(
    url: &str,
    plugin: &str,
    input: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    subjects::validate_name(plugin)?;
    let value = match input {
        Some(text) => {
            let json: serde_json::Value =
                serde_json::from_str(text).context("input is not valid JSON")?;
            wire::from_json(&json)
        }
        None => wire::Value::Nil,
    };
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let request = async_nats::Request::new()
        .payload(wire::encode(&value))
        .timeout(Some(timeout));
    let reply = match client.send_request(subjects::exec(plugin), request).await {
        Ok(reply) => reply,
        Err(e) => {
            use async_nats::RequestErrorKind;
            let why = match e.kind() {
                RequestErrorKind::NoResponders => format!(
                    "no worker serves plugin {plugin:?} (no responders on {})",
                    subjects::exec(plugin)
                ),
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
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_ERROR_CODE))
    {
        let message = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_ERROR))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        eprintln!("error {}: {message}", code.as_str());
        return Ok(ExitCode::from(1));
    }
    let output = wire::decode(&reply.payload).context("reply is not valid MessagePack")?;
    println!("{}", wire::to_json(&output));
    Ok(ExitCode::SUCCESS)
}

async fn events(url: &str, plugin: Option<&str>) -> anyhow::Result<ExitCode> {
    let subject = match plugin {
        Some(p) => {
            subjects::validate_name(p)?;
            subjects::result_event(p)
        }
        None => "mofa.events.>".to_string(),
    };
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let mut sub = client.subscribe(subject).await?;
    while let Some(message) = sub.next().await {
        match wire::decode(&message.payload) {
            Ok(event) => println!("{}", wire::to_json(&event)),
            Err(e) => eprintln!("warning: undecodable event on {}: {e}", message.subject),
        }
    }
    Ok(ExitCode::SUCCESS)
}
