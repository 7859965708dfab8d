//! `mofa`: the command-line entry point. It parses the command line, starts the async runtime
//! and logging, and hands each verb to its file under `cmd/` (see there for what each does).

/// mimalloc instead of the system allocator: the request path allocates and frees across
/// threads (a request decoded on one thread, answered on another), where glibc's allocator
/// spends a large share of the worker's CPU. Built without transparent huge pages (feature
/// `no_thp`), so an idle worker keeps only the memory it touched resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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

/// The verbs; each one's options, manual and examples are in its file under `cmd/`.
#[derive(Subcommand, Debug)]
enum Command {
    Worker(cmd::worker::WorkerArgs),
    Setup(cmd::setup::SetupArgs),
    Sql(cmd::worker::SqlArgs),
    Exec(cmd::exec::ExecArgs),
    Submit(cmd::jobs::SubmitArgs),
    Job(cmd::jobs::JobArgs),
    Dlq(cmd::jobs::DlqArgs),
    Publish(cmd::rollout::PublishArgs),
    Run(cmd::local::RunArgs),
    Test(cmd::local::TestArgs),
    Promote(cmd::rollout::PromoteArgs),
    Canary(cmd::rollout::CanaryArgs),
    Keygen(cmd::rollout::KeygenArgs),
    Watch(cmd::watch::WatchArgs),
    Rollback(cmd::bucket::RollbackArgs),
    Remove(cmd::bucket::RemoveArgs),
    History(cmd::bucket::HistoryArgs),
    Plugins(cmd::fleet::PluginsArgs),
    Stats(cmd::fleet::StatsArgs),
    Ping(cmd::fleet::PingArgs),
    Tools(cmd::fleet::ToolsArgs),
    Mcp(cmd::mcp::McpArgs),
    Events(cmd::events::EventsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let startup = match &cli.command {
        Command::Worker(args) => cmd::worker::Startup::of(args),
        _ => cmd::worker::Startup::client(),
    };
    let runtime = match mofa_bus::worker::runtime::build(startup.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = startup.telemetry(cli.log_format);
    let code = runtime.block_on(run(cli));
    // A task still blocked (a stdin read of `mofa mcp`) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // Outside the runtime: the exporters' last flush blocks.
    telemetry.shutdown();
    code
}

/// Hands each verb to its file in `cmd/`; an error it returns is printed once, exit 2.
async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Worker(args) => args.run().await,
        Command::Setup(args) => args.run().await,
        Command::Sql(args) => args.run().await,
        Command::Exec(args) => args.run().await,
        Command::Submit(args) => args.run().await,
        Command::Job(args) => args.run().await,
        Command::Dlq(args) => args.run().await,
        Command::Publish(args) => args.run().await,
        Command::Run(args) => args.run().await,
        Command::Test(args) => args.run().await,
        Command::Promote(args) => args.run().await,
        Command::Canary(args) => args.run().await,
        Command::Keygen(args) => args.run(),
        Command::Watch(args) => args.run().await,
        Command::Rollback(args) => args.run().await,
        Command::Remove(args) => args.run().await,
        Command::History(args) => args.run().await,
        Command::Plugins(args) => args.run().await,
        Command::Stats(args) => args.run().await,
        Command::Ping(args) => args.run().await,
        Command::Tools(args) => args.run().await,
        Command::Mcp(args) => args.run().await,
        Command::Events(args) => args.run().await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
