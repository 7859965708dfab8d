//! What the live fleet of one environment serves, asked the way any NATS client would: one
//! `$SRV.INFO.mofa` request (`$SRV.INFO.mofa-<env>` outside production), answered by every
//! worker, collected for a short while.
//!
//! `mofa plugins` lists the endpoints; `mofa tools` and `mofa mcp` take the tools among them
//! and render them in the shapes LLM APIs accept; `mofa stats` sums every worker's
//! `$SRV.STATS` per plugin.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;

use crate::plugin::ToolSpec;
use crate::subjects::Namespace;
use crate::worker::{TOOL_DESCRIPTION, TOOL_PARAMETERS};

/// One plugin one worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The worker's id.
    pub worker: String,
    /// The plugin's name.
    pub plugin: String,
    /// The endpoint metadata (kind, version, revision, sha256, tool description and schema).
    pub metadata: HashMap<String, String>,
}

/// The answers of every worker to `$SRV.<verb>.mofa` within `wait`, decoded as `T` (answers
/// that do not decode are skipped).
async fn ask_all<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    namespace: &Namespace,
    verb: &str,
    wait: Duration,
) -> Result<Vec<T>, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(
            format!("$SRV.{verb}.{}", namespace.service_name()),
            inbox,
            bytes::Bytes::new(),
        )
        .await?;
    client.flush().await?;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(answer) = serde_json::from_slice::<T>(&message.payload) {
            found.push(answer);
        }
    }
    Ok(found)
}

/// Every endpoint of every worker that answers `$SRV.INFO.mofa` within `wait`, sorted by plugin
/// and worker.
pub async fn endpoints(
    client: &async_nats::Client,
    namespace: &Namespace,
    wait: Duration,
) -> Result<Vec<Endpoint>, async_nats::Error> {
    let mut found = Vec::new();
    for info in ask_all::<async_nats::service::Info>(client, namespace, "INFO", wait).await? {
        found.extend(info.endpoints.into_iter().map(|e| Endpoint {
            worker: info.id.clone(),
            plugin: e.name,
            metadata: e.metadata,
        }));
    }
    found.sort_by(|a, b| (&a.plugin, &a.worker).cmp(&(&b.plugin, &b.worker)));
    Ok(found)
}

/// One plugin's counts summed over the workers that serve it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PluginStats {
    /// Plugin name.
    pub plugin: String,
    /// Workers that serve it.
    pub workers: usize,
    /// Requests answered (errors included).
    pub requests: u64,
    /// Error replies.
    pub errors: u64,
    /// Error replies per code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Requests answered 503 without running.
    pub refused: u64,
    /// Mean processing time, in microseconds.
    pub average_us: u64,
    /// Revisions that loaded and serve.
    pub reloads_completed: u64,
    /// Revisions that were rejected.
    pub reloads_failed: u64,
    /// Rejections after which the previous revision kept serving.
    pub reloads_rolled_back: u64,
}

impl PluginStats {
    /// Completed reloads over completed plus failed; `None` before any reload.
    pub fn reload_success_rate(&self) -> Option<f64> {
        let tried = self.reloads_completed + self.reloads_failed;
        (tried > 0).then(|| self.reloads_completed as f64 / tried as f64)
    }
}

/// Every plugin's counts, summed over the workers that answer `$SRV.STATS.mofa` within `wait`,
/// sorted by plugin.
pub async fn stats(
    client: &async_nats::Client,
    namespace: &Namespace,
    wait: Duration,
) -> Result<Vec<PluginStats>, async_nats::Error> {
    let mut plugins: BTreeMap<String, (PluginStats, Duration)> = BTreeMap::new();
    for answer in ask_all::<async_nats::service::Stats>(client, namespace, "STATS", wait).await? {
        for e in answer.endpoints {
            let (row, time) = plugins.entry(e.name.clone()).or_insert_with(|| {
                (
                    PluginStats {
                        plugin: e.name.clone(),
                        ..Default::default()
                    },
                    Duration::ZERO,
                )
            });
            row.workers += 1;
            row.requests += e.requests as u64;
            row.errors += e.errors as u64;
            *time += e.processing_time;
            let data = e.data.unwrap_or_default();
            let count = |path: &[&str]| {
                path.iter()
                    .try_fold(&data, |v, k| v.get(k))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            };
            row.refused += count(&["refused"]);
            row.reloads_completed += count(&["reloads", "completed"]);
            row.reloads_failed += count(&["reloads", "failed"]);
            row.reloads_rolled_back += count(&["reloads", "rolled_back"]);
            if let Some(codes) = data.get("errors_by_code").and_then(|c| c.as_object()) {
                for (code, n) in codes {
                    *row.errors_by_code.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    Ok(plugins
        .into_values()
        .map(|(mut row, time)| {
            row.average_us = (time.as_micros() as u64)
                .checked_div(row.requests)
                .unwrap_or(0);
            row
        })
        .collect())
}

/// The tools among `endpoints`, one per name (workers serving different revisions of a tool:
/// the first worker's), sorted by name.
pub fn tools(endpoints: &[Endpoint]) -> Vec<ToolSpec> {
    let mut tools = BTreeMap::new();
    for e in endpoints {
        let (Some(description), Some(parameters)) = (
            e.metadata.get(TOOL_DESCRIPTION),
            e.metadata.get(TOOL_PARAMETERS),
        ) else {
            continue;
        };
        let Ok(parameters) = serde_json::from_str(parameters) else {
            continue;
        };
        tools.entry(e.plugin.clone()).or_insert_with(|| ToolSpec {
            name: e.plugin.clone(),
            description: description.clone(),
            parameters,
        });
    }
    tools.into_values().collect()
}

/// The function-calling shapes of the LLM APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolFormat {
    /// OpenAI chat completions: `{type: "function", function: {name, description, parameters}}`.
    Openai,
    /// Anthropic messages: `{name, description, input_schema}`.
    Anthropic,
    /// Model Context Protocol `tools/list`: `{name, description, inputSchema}`.
    Mcp,
    /// This project's own: `{name, description, parameters}`.
    Json,
}

/// `tools` as a JSON array in `format`.
pub fn render(tools: &[ToolSpec], format: ToolFormat) -> serde_json::Value {
    use serde_json::json;
    tools
        .iter()
        .map(|t| match format {
            ToolFormat::Openai => json!({
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }),
            ToolFormat::Anthropic => json!({
                "name": t.name, "description": t.description, "input_schema": t.parameters,
            }),
            ToolFormat::Mcp => json!({
                "name": t.name, "description": t.description, "inputSchema": t.parameters,
            }),
            ToolFormat::Json => json!({
                "name": t.name, "description": t.description, "parameters": t.parameters,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_taken_once_per_name_and_rendered_per_api() {
        let endpoint = |worker: &str, plugin: &str, tool: bool| Endpoint {
            worker: worker.into(),
            plugin: plugin.into(),
            metadata: if tool {
                HashMap::from([
                    (TOOL_DESCRIPTION.to_string(), format!("{plugin} tool")),
                    (
                        TOOL_PARAMETERS.to_string(),
                        r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into(),
                    ),
                ])
            } else {
                HashMap::new()
            },
        };
        let found = tools(&[
            endpoint("w1", "echo", false),
            endpoint("w1", "get_weather", true),
            endpoint("w2", "get_weather", true),
        ]);
        assert_eq!(found.len(), 1);
        let openai = render(&found, ToolFormat::Openai);
        assert_eq!(openai[0]["function"]["name"], "get_weather");
        assert_eq!(openai[0]["function"]["parameters"]["type"], "object");
        let anthropic = render(&found, ToolFormat::Anthropic);
        assert_eq!(anthropic[0]["input_schema"]["type"], "object");
        assert_eq!(
            render(&found, ToolFormat::Mcp)[0]["inputSchema"]["type"],
            "object"
        );
        assert_eq!(
            render(&found, ToolFormat::Json)[0]["description"],
            "get_weather tool"
        );
    }
}
