//! The NATS Services API (ADR-32, "micro"): `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`.
//!
//! Answered with async-nats's own `service` schema types, so `nats micro ls/info/stats` and
//! any micro client read them. The worker answers these verbs itself rather than through
//! `async_nats::service::Service` because error replies here carry a MessagePack body as well
//! as the standard headers, and because per-request stats must not take a lock shared by
//! every endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::service::{endpoint, error, Info, PingResponse, Stats};
use async_nats::Client;
use futures::stream::{self, StreamExt};
use tokio::sync::watch;

use super::endpoint::Endpoint;
use crate::subjects::QUEUE_GROUP;

/// Endpoint metadata key of a tool's description.
pub const TOOL_DESCRIPTION: &str = "tool_description";
/// Endpoint metadata key of a tool's argument schema (JSON text).
pub const TOOL_PARAMETERS: &str = "tool_parameters";

/// Service version announced on the Services API.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the Services API responder knows about this worker.
pub(crate) struct ServiceInfo {
    pub(crate) id: String,
    /// The service name: `mofa`, or `mofa-<env>` outside production.
    pub(crate) service: String,
    /// The environment this worker follows.
    pub(crate) env: String,
    /// The endpoints served right now (they come and go with hot reload).
    pub(crate) endpoints: Box<dyn Fn() -> Vec<Arc<Endpoint>> + Send + Sync>,
    /// Reload outcomes per plugin on this worker.
    pub(crate) reloads: Arc<crate::telemetry::ReloadCounts>,
}

impl ServiceInfo {
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("worker".to_string(), self.id.clone()),
            ("env".to_string(), self.env.clone()),
        ])
    }

    fn ping(&self) -> PingResponse {
        PingResponse {
            kind: "io.nats.micro.v1.ping_response".to_string(),
            name: self.service.clone(),
            id: self.id.clone(),
            version: SERVICE_VERSION.to_string(),
            metadata: self.metadata(),
        }
    }

    fn info(&self) -> Info {
        Info {
            kind: "io.nats.micro.v1.info_response".to_string(),
            name: self.service.clone(),
            id: self.id.clone(),
            description:
                "mofa-bus plugin worker: native, Rhai and WASM plugins on mofa.exec.<plugin>"
                    .to_string(),
            version: SERVICE_VERSION.to_string(),
            metadata: self.metadata(),
            endpoints: (self.endpoints)()
                .iter()
                .map(|e| {
                    let served = e.served();
                    let mut metadata = HashMap::from([
                        (
                            "kind".to_string(),
                            served.plugin.kind().as_str().to_string(),
                        ),
                        (
                            "version".to_string(),
                            served.plugin.metadata().version.clone(),
                        ),
                    ]);
                    if let Some(revision) = &served.revision {
                        metadata.insert("revision".to_string(), revision.number.to_string());
                        metadata.insert("sha256".to_string(), revision.sha256.clone());
                    }
                    if let Some((canary, route)) = &served.canary {
                        if let Some(revision) = &canary.revision {
                            metadata
                                .insert("canary_revision".to_string(), revision.number.to_string());
                        }
                        metadata.insert("canary_percent".to_string(), route.percent.to_string());
                    }
                    let meta = served.plugin.metadata();
                    if !meta.description.is_empty() {
                        metadata.insert("description".to_string(), meta.description.clone());
                    }
                    if let Some(tool) = &meta.tool {
                        metadata.insert(TOOL_DESCRIPTION.to_string(), tool.description.clone());
                        metadata.insert(TOOL_PARAMETERS.to_string(), tool.parameters.to_string());
                    }
                    endpoint::Info {
                        name: e.name.clone(),
                        subject: e.subject.clone(),
                        queue_group: QUEUE_GROUP.to_string(),
                        metadata,
                    }
                })
                .collect(),
        }
    }

    fn stats(&self, started: async_nats::datetime::DateTime) -> Stats {
        Stats {
            kind: "io.nats.micro.v1.stats_response".to_string(),
            name: self.service.clone(),
            id: self.id.clone(),
            version: SERVICE_VERSION.to_string(),
            started,
            endpoints: (self.endpoints)()
                .iter()
                .map(|e| {
                    let requests = e.stats.requests() as usize;
                    let processing_time = e.stats.processing_time();
                    endpoint::Stats {
                        name: e.name.clone(),
                        subject: e.subject.clone(),
                        requests,
                        errors: e.stats.errors() as usize,
                        processing_time,
                        average_processing_time: processing_time
                            .checked_div(requests.max(1) as u32)
                            .unwrap_or_default(),
                        last_error: e.stats.last_error().map(|(code, status)| error::Error {
                            code: usize::from(code),
                            status,
                        }),
                        data: Some({
                            let [completed, failed, rolled_back] = self.reloads.of(&e.name);
                            serde_json::json!({
                                "queued": e.stats.queued(),
                                "refused": e.stats.refused(),
                                "expired": e.stats.expired(),
                                "errors_by_code": e.stats.errors_by_code().into_iter()
                                    .map(|(code, n)| (code.to_string(), n.into()))
                                    .collect::<serde_json::Map<String, serde_json::Value>>(),
                                "reloads": {
                                    "completed": completed,
                                    "failed": failed,
                                    "rolled_back": rolled_back,
                                },
                            })
                        }),
                        queue_group: QUEUE_GROUP.to_string(),
                    }
                })
                .collect(),
        }
    }
}

/// Subscribes to PING, INFO and STATS (all, by name, by id); the returned future answers them
/// until shutdown. Subscribing first lets the worker flush and say it is ready only when the
/// Services API answers.
pub(crate) async fn subscribe(
    client: Client,
    info: Arc<ServiceInfo>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, async_nats::SubscribeError> {
    let started = async_nats::datetime::now();
    let mut subscriptions = Vec::new();
    for verb in ["PING", "INFO", "STATS"] {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.{}", info.service),
            format!("$SRV.{verb}.{}.{}", info.service, info.id),
        ] {
            let sub = client.subscribe(subject).await?;
            subscriptions.push(sub.map(move |m| (verb, m)));
        }
    }
    let mut requests = stream::select_all(subscriptions);
    Ok(async move {
        loop {
            let (verb, message) = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                next = requests.next() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            let Some(reply) = message.reply else {
                continue;
            };
            let body = match verb {
                "PING" => serde_json::to_vec(&info.ping()),
                "INFO" => serde_json::to_vec(&info.info()),
                _ => serde_json::to_vec(&info.stats(started)),
            };
            match body {
                Ok(body) => {
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, verb, "services API reply not sent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, verb, "services API reply not encoded"),
            }
        }
    })
}
