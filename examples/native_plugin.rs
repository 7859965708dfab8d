//! A native plugin of your own, served by an embedded worker beside the built-in plugins, the
//! plugins directory's scripts and modules, and whatever is published to the bus.
//!
//! ```sh
//! cargo run --example native_plugin -- nats://127.0.0.1:4222
//! mofa exec greet '{"name": "ada"}'        # {"greeting":"hello, ada"}
//! ```
//!
//! Stop it with Ctrl-C: the worker drains (answers what it has taken) and exits.

use std::sync::Arc;

use async_trait::async_trait;
use mofa_bus::config::WorkerConfig;
use mofa_bus::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata, Value};
use mofa_bus::worker::Worker;

/// Answers `{"name": N}` with `{"greeting": "hello, N"}`; anything else is a 400.
struct Greet {
    meta: PluginMetadata,
}

#[async_trait]
impl AgentPlugin for Greet {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        let name = mofa_bus::native::field(&input, "name")?;
        let Some(name) = name.as_str() else {
            return Err(PluginError::BadInput(format!(
                "name must be a string, got {}",
                mofa_bus::wire::type_name(name)
            )));
        };
        Ok(Value::Map(vec![(
            Value::from("greeting"),
            Value::from(format!("hello, {name}")),
        )]))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info,async_nats=warn")
        .init();
    let config = WorkerConfig {
        nats_url: std::env::args()
            .nth(1)
            .unwrap_or_else(|| mofa_bus::config::DEFAULT_NATS_URL.to_string()),
        ..WorkerConfig::default()
    };
    let mut natives = mofa_bus::native::builtin(&config.database, &config.data_dir());
    natives.push(Arc::new(Greet {
        meta: PluginMetadata::new("greet", PluginKind::Native)
            .version("1.0.0")
            .description("Greets by name"),
    }));
    let worker = Worker::start_with(config, natives).await?;
    eprintln!("serving greet as worker {}; Ctrl-C stops it", worker.id());
    tokio::signal::ctrl_c().await?;
    worker.shutdown().await?;
    Ok(())
}
