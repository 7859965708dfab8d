//! `mofa setup`: the admin step. It makes every stream, bucket and consumer the fleet uses,
//! with the configured settings, so the runtime roles (worker, client, publisher, monitor)
//! need no stream administration and `deploy/nats/permissions.conf` can deny it to them.

use std::path::PathBuf;
use std::process::ExitCode;

use futures::TryStreamExt;
use mofa_bus::config::{validate_env, WorkerConfig, PRODUCTION};
use mofa_bus::distribution::Distribution;
use mofa_bus::jobs::Jobs;
use mofa_bus::provision::Provisioned;

use super::connect::NatsArgs;

/// Create the fleet's streams, buckets and jobs consumers (run once, with an admin
/// credential; running it again changes nothing and says what it found).
///
/// Made per environment: the plugins bucket (`mofa_plugins`, `mofa_plugins_<env>`); once: the
/// module object store `mofa_modules`, the durable jobs streams `MOFA_JOBS` and `MOFA_DLQ`, the
/// results bucket `mofa_results`, and a jobs consumer for every plugin published in production.
/// Settings (replicas, history, TTLs, dedup window) come from the workers' config file.
///
/// Exit status: 0 everything exists, 2 something could not be made (the error says which).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa setup --user admin                      # password from $MOFA_NATS_PASSWORD\n  \
    mofa setup production staging --config deploy/worker.toml\n  \
    mofa setup --replicas 3 --json               # a 3-node cluster; one JSON line per resource")]
pub(crate) struct SetupArgs {
    /// Environments whose plugins buckets to make [default: --env, or production].
    pub(crate) environments: Vec<String>,
    /// The workers' config file: its [reload] and [jobs] settings are used.
    #[arg(long, short, env = "MOFA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Copies of every stream (1 on one server, 3 on a 3-node cluster); overrides the config's
    /// reload.replicas and jobs.replicas.
    #[arg(long)]
    pub(crate) replicas: Option<usize>,
    /// Print one JSON object per stream, bucket or consumer.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl SetupArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let mut config = match &self.config {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        if let Some(replicas) = self.replicas {
            config.reload.replicas = replicas;
            config.jobs.replicas = replicas;
        }
        config.validate()?;
        let nats = self.nats.resolve();
        let environments = match self.environments.is_empty() {
            true => vec![nats.env.clone()],
            false => self.environments.clone(),
        };
        for env in &environments {
            validate_env(env)?;
        }
        let client = nats.connect("mofa setup").await?;
        let mut production = None;
        for (at, env) in environments.iter().enumerate() {
            let reload = config.reload.in_env(env)?;
            let (distribution, made) = Distribution::provision(client.clone(), &reload).await?;
            if env == PRODUCTION {
                production = Some(distribution);
            }
            // Environments share the module store: said once.
            let made: Vec<_> = made
                .into_iter()
                .filter(|one| at == 0 || one.kind != "object store")
                .collect();
            self.print(&made)?;
        }
        let (jobs, made) = Jobs::provision(client.clone(), &config.jobs).await?;
        self.print(&made)?;
        // The jobs consumers are production's: its bucket says which plugins there are.
        let distribution = match production {
            Some(distribution) => distribution,
            None => Distribution::open(client.clone(), &config.reload.in_env(PRODUCTION)?).await?,
        };
        let plugins: Vec<String> = match distribution.kv().keys().await {
            Ok(keys) => keys.try_collect().await?,
            Err(e) => anyhow::bail!("listing the production plugins: {e}"),
        };
        for plugin in plugins {
            self.print(&[jobs.provision_consumer(&plugin).await?])?;
        }
        client.flush().await?;
        Ok(ExitCode::SUCCESS)
    }

    /// One line per resource: `created stream MOFA_JOBS`, or a JSON object.
    fn print(&self, made: &[Provisioned]) -> anyhow::Result<()> {
        for one in made {
            if self.json {
                println!("{}", serde_json::to_string(one)?);
            } else {
                let what = if one.created { "created" } else { "found  " };
                println!("{what} {} {}", one.kind, one.name);
            }
        }
        Ok(())
    }
}
