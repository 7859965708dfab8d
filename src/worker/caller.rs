//! How a plugin calls another plugin: locally when this worker serves it, otherwise over the
//! bus as an ordinary request carrying the call depth in `Mofa-Call-Depth` and the trace
//! context in `traceparent`. Each call is a `mofa.call <plugin>` span, a child of the calling
//! request's, so a chain across workers is one trace.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{Client, HeaderMap, RequestErrorKind};
use futures::future::BoxFuture;
use tracing::Instrument;

use crate::plugin::{CallContext, PluginCaller, PluginError, PluginManager, Value};
use crate::subjects;
use crate::telemetry;
use crate::wire;

/// The worker's [`PluginCaller`].
pub(crate) struct BusCaller {
    pub(crate) manager: Weak<PluginManager>,
    pub(crate) client: Client,
    pub(crate) timeout: Duration,
    /// The environment's subjects: a call stays in the caller's environment.
    pub(crate) namespace: subjects::Namespace,
}

impl PluginCaller for BusCaller {
    fn call(
        &self,
        plugin: &str,
        input: Value,
        context: CallContext,
    ) -> BoxFuture<'static, Result<Value, PluginError>> {
        let local = self.manager.upgrade().and_then(|m| m.running(plugin));
        // Made here, on the calling plugin's thread, where its request's span is current.
        let subject = self.namespace.exec(plugin);
        let span = telemetry::call_span(plugin, &subject, context.depth, local.is_some());
        let (client, plugin, timeout) = (self.client.clone(), plugin.to_string(), self.timeout);
        let traced = span.clone();
        Box::pin(
            async move {
                let result = match local {
                    Some(local) => local.execute_in(input, context).await,
                    None => {
                        let timeout = context.deadline.map_or(timeout, |d| {
                            d.saturating_duration_since(std::time::Instant::now())
                        });
                        remote(client, subject, &plugin, input, context.depth, timeout).await
                    }
                };
                if let Err(e) = &result {
                    telemetry::call_failed(&traced, e.code().as_u16(), e);
                }
                result
            }
            .instrument(span),
        )
    }
}

async fn remote(
    client: Client,
    subject: String,
    plugin: &str,
    input: Value,
    depth: u32,
    timeout: Duration,
) -> Result<Value, PluginError> {
    subjects::validate_name(plugin).map_err(|e| PluginError::BadInput(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(wire::HEADER_CALL_DEPTH, depth.to_string().as_str());
    // The callee stops where this call stops waiting.
    let deadline = wire::unix_ms().saturating_add(timeout.as_millis() as u64);
    headers.insert(wire::HEADER_DEADLINE, deadline.to_string().as_str());
    telemetry::inject(&mut headers);
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(wire::encode(&input))
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject, request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => {
                PluginError::Unavailable(format!("no worker serves plugin {plugin}"))
            }
            RequestErrorKind::TimedOut => {
                PluginError::Timeout(format!("plugin {plugin} did not answer in time"))
            }
            _ => PluginError::Failed(format!("calling plugin {plugin}: {e}")),
        })?;
    if let Some((code, message)) = wire::reply_error(reply.headers.as_ref()) {
        return Err(PluginError::from_code(code, format!("{plugin}: {message}")));
    }
    wire::decode(&reply.payload)
        .map_err(|e| PluginError::Failed(format!("plugin {plugin} replied with {e}")))
}

/// A caller for a worker whose manager is `manager`.
pub(crate) fn new(
    manager: &Arc<PluginManager>,
    client: Client,
    timeout: Duration,
    namespace: subjects::Namespace,
) -> Arc<BusCaller> {
    Arc::new(BusCaller {
        manager: Arc::downgrade(manager),
        client,
        timeout,
        namespace,
    })
}
