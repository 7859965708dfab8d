//! `mofa run FILE [JSON]` and `mofa test [PATH…]`: plugin files run locally in the worker's
//! sandbox and limits, with no bus (see [`mofa_bus::local`]); `mofa publish` and `mofa watch`
//! build each plugin and run the same cases through [`check`] before a revision leaves the
//! machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mofa_bus::config::WorkerConfig;
use mofa_bus::kinds;
use mofa_bus::local::cases;
use mofa_bus::local::LocalRunner;
use mofa_bus::wire;

use super::worker::DatabaseArgs;

/// Run a plugin file once, locally, in the same sandbox and limits as a worker (no NATS):
/// a script (plain, tool or rule set) or a module with its manifest. Prints the output as
/// JSON on stdout, and the time taken (or the error code and message) on stderr.
///
/// `call_plugin` reaches the native plugins (echo, discount_native, database on the
/// configured database). Exit status: 0 on an output, 1 on an error, 2 when the file
/// does not load.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa run plugins/discount.rhai '{\"price\": 100, \"customer_tier\": \"gold\"}'\n  \
    mofa run plugins/wordcount.wasm '{\"text\": \"the cat\"}'\n  \
    mofa run plugins/data_analyzer.rhai --data-dir /tmp/shop")]
pub(crate) struct RunArgs {
    /// The .rhai or .wasm file.
    pub(crate) file: PathBuf,
    /// Input as JSON (converted to MessagePack). Omitted: nil.
    pub(crate) input: Option<String>,
    /// The worker configuration whose limits apply.
    #[arg(long, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
}

/// Build plugins as a worker would and run their test cases: FILE.test.toml beside
/// FILE.rhai or FILE.wasm (see docs/scripts.md). Each case file runs on a fresh embedded
/// SQLite database, with its `sql` files loaded.
///
/// Exit status: 0 every plugin builds and every case passed, 1 a plugin does not build, a
/// case failed or a case file is broken.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa test                               # every plugin in the plugins directory\n  \
    mofa test plugins/discount.rhai\n  \
    mofa test plugins/rules/ --config worker.toml")]
pub(crate) struct TestArgs {
    /// Plugin files, case files or directories [default: the plugins directory].
    pub(crate) paths: Vec<PathBuf>,
    /// The worker configuration whose limits apply.
    #[arg(long, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl RunArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let config = self.database.over(self.config.as_deref())?;
        run(&self.file, self.input.as_deref(), &config).await
    }
}

impl TestArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        test(&self.paths, self.config.as_deref()).await
    }
}

/// `mofa run`.
pub(crate) async fn run(
    file: &Path,
    input: Option<&str>,
    config: &WorkerConfig,
) -> anyhow::Result<ExitCode> {
    let input = super::exec::json_input(input)?;
    let natives = mofa_bus::native::builtin(&config.database, &config.data_dir());
    let runner = LocalRunner::new(config, natives).await?;
    let plugin = match runner.load(file).await {
        Ok(plugin) => plugin,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (result, elapsed) = runner.run(&plugin, input).await;
    match result {
        Ok(output) => {
            println!("{}", wire::to_json(&output));
            eprintln!("{} answered in {}", plugin.id(), micros(elapsed));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error {}: {e} ({} after {})",
                e.code().as_u16(),
                plugin.id(),
                micros(elapsed)
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// What building a plugin and running its cases said.
pub(crate) enum Checked {
    /// It builds; no case file beside the code.
    NoCases,
    /// It builds and every case passed: how many.
    Passed(u32),
    /// It does not build, a case failed, or the case file is broken (reported already).
    Failed,
}

/// Builds the plugin in `code` as a worker would (see [`LocalRunner::verify`]), then runs the
/// cases beside it (if any) under `config`, writing one line per case to `out`. A plugin that
/// does not build fails whatever its cases.
pub(crate) async fn check(
    code: &Path,
    runner: &LocalRunner,
    config: &WorkerConfig,
    out: &mut impl Write,
) -> Checked {
    if let Err(e) = runner.verify(code).await {
        let _ = writeln!(
            out,
            "{}\n  FAIL  does not build: {}",
            code.display(),
            build_error(&e)
        );
        return Checked::Failed;
    }
    run_cases(code, config, out).await
}

/// Runs the cases beside `code` (if any) under `config`, writing one line per case to `out`;
/// for a plugin already built by [`LocalRunner::verify`].
pub(crate) async fn run_cases(code: &Path, config: &WorkerConfig, out: &mut impl Write) -> Checked {
    let (case_path, outcomes) = match cases::run_beside(code, config).await {
        Ok(Some(ran)) => ran,
        Ok(None) => return Checked::NoCases,
        Err(e) => {
            let _ = writeln!(out, "{}\n  FAIL  {e}", code.display());
            return Checked::Failed;
        }
    };
    let _ = writeln!(out, "{} ({})", code.display(), case_path.display());
    let mut passed = 0;
    for outcome in &outcomes {
        match &outcome.failure {
            None => {
                passed += 1;
                let _ = writeln!(
                    out,
                    "  ok    {} ({})",
                    outcome.case,
                    micros(outcome.elapsed)
                );
            }
            Some(why) => {
                let _ = writeln!(out, "  FAIL  {}: {why}", outcome.case);
            }
        }
    }
    if passed == outcomes.len() {
        Checked::Passed(passed as u32)
    } else {
        Checked::Failed
    }
}

/// Why a plugin does not build, said once (`bad.rhai:2:18: Unexpected ';'`, without the
/// error kind's own prefix).
pub(crate) fn build_error(error: &mofa_bus::plugin::PluginError) -> String {
    match error {
        mofa_bus::plugin::PluginError::Load(why) => why.clone(),
        other => other.to_string(),
    }
}

/// A runner that builds plugins under `config`'s limits, for checks (no native plugins: a
/// build never calls one).
pub(crate) async fn checker(config: &WorkerConfig) -> anyhow::Result<LocalRunner> {
    Ok(LocalRunner::new(config, Vec::new()).await?)
}

/// `mofa test`.
pub(crate) async fn test(
    paths: &[PathBuf],
    config_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = match config_file {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    let paths = if paths.is_empty() {
        let dir = std::env::var_os("MOFA_PLUGINS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| config.plugins_dir.clone());
        vec![dir]
    } else {
        paths.to_vec()
    };
    let mut code_files = Vec::new();
    for path in &paths {
        if path.is_dir() {
            code_files.extend(kinds::code_files(path));
        } else if kinds::is_case_file(path) {
            match kinds::code_for_case(path) {
                Some(code) => code_files.push(code),
                None => anyhow::bail!("{}: no plugin file beside it with its name", path.display()),
            }
        } else if path.is_file() {
            code_files.push(path.clone());
        } else {
            anyhow::bail!("{}: no such file or directory", path.display());
        }
    }
    let (mut passed, mut failed, mut without) = (0, 0, Vec::new());
    let mut out = std::io::stdout();
    let runner = checker(&config).await?;
    for code in &code_files {
        match check(code, &runner, &config, &mut out).await {
            Checked::NoCases => without.push(code.display().to_string()),
            Checked::Passed(n) => passed += n,
            Checked::Failed => failed += 1,
        }
    }
    if !without.is_empty() {
        println!("no cases: {}", without.join(", "));
    }
    println!(
        "{passed} cases passed; {failed} plugin(s) failed; {} plugin(s) built but have no cases",
        without.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `1.23 ms`, `456 µs`.
fn micros(elapsed: Duration) -> String {
    let us = elapsed.as_micros();
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
