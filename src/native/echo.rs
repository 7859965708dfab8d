//! `echo`: returns its input unchanged. The baseline for measuring the worker's own overhead.

use async_trait::async_trait;

use crate::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata, Value};

/// Returns its input.
#[derive(Debug)]
pub struct Echo {
    meta: PluginMetadata,
}

impl Echo {
    /// The plugin, named `echo`.
    pub fn new() -> Self {
        Self {
            meta: PluginMetadata::new("echo", PluginKind::Native)
                .version(env!("CARGO_PKG_VERSION"))
                .description("Returns its input unchanged")
                .capability("echo"),
        }
    }
}

impl Default for Echo {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AgentPlugin for Echo {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        Ok(input)
    }
}
