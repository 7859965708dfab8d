//! Requests as a client sends them, replies read as the Services API error convention says,
//! and waits on what the workers report.

use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use mofa_bus::wire::{self, ErrorBody, Value};

/// What came back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Err {
        code: u16,
        header: String,
        body: ErrorBody,
    },
}

impl Reply {
    /// The value of a successful reply; panics (naming the error) on an error reply.
    pub fn expect_value(self) -> Value {
        match self {
            Reply::Ok(v) => v,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            Reply::Ok(_) => None,
            Reply::Err { code, .. } => Some(*code),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Reply::Ok(v) => panic!("expected an error, got {v}"),
            Reply::Err { body, .. } => body.message.clone(),
        }
    }
}

/// Sends raw bytes to `mofa.exec.<plugin>` and interprets the reply.
pub async fn call_raw(
    client: &Client,
    plugin: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, async_nats::RequestError> {
    call_with_headers(client, plugin, body, timeout, async_nats::HeaderMap::new()).await
}

/// [`call_raw`] with request headers.
pub async fn call_with_headers(
    client: &Client,
    plugin: &str,
    body: Bytes,
    timeout: Duration,
    headers: async_nats::HeaderMap,
) -> Result<Reply, async_nats::RequestError> {
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body)
        .timeout(Some(timeout));
    let message = client
        .send_request(mofa_bus::subjects::exec(plugin), request)
        .await?;
    let code = message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_ERROR_CODE))
        .map(|v| v.as_str().parse::<u16>().expect("numeric code"));
    Ok(match code {
        None => Reply::Ok(wire::decode(&message.payload).expect("reply is MessagePack")),
        Some(code) => {
            let header = message
                .headers
                .as_ref()
                .and_then(|h| h.get(wire::HEADER_ERROR))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let body: ErrorBody =
                rmp_serde::from_slice(&message.payload).expect("error body is {code, message}");
            assert_eq!(body.code, code, "body and header codes agree");
            Reply::Err { code, header, body }
        }
    })
}

/// Sends a value to `mofa.exec.<plugin>` with a 5 s timeout.
pub async fn call(client: &Client, plugin: &str, input: Value) -> Reply {
    call_raw(client, plugin, wire::encode(&input), Duration::from_secs(5))
        .await
        .expect("a reply")
}

/// A MessagePack map from string keys.
pub fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// Waits until some worker answers `plugin` (its subscription is live).
pub async fn wait_for_plugin(client: &Client, plugin: &str, input: Value) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if call_raw(
            client,
            plugin,
            wire::encode(&input),
            Duration::from_millis(500),
        )
        .await
        .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker answered {plugin}");
}

/// The `data` (`{queued, refused}`) of `plugin`'s endpoint in the workers' `$SRV.STATS` reply;
/// `None` while no worker answers the Services API yet (a starting worker answers it only once
/// it has synced the plugins bucket, after its local plugins already serve).
pub async fn endpoint_data(client: &Client, plugin: &str) -> Option<serde_json::Value> {
    let reply = client.request("$SRV.STATS.mofa", Bytes::new()).await.ok()?;
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
    stats["endpoints"]
        .as_array()
        .and_then(|endpoints| endpoints.iter().find(|e| e["name"] == plugin))
        .map(|e| e["data"].clone())
}

/// Waits until a worker's Services API lists `plugin`. A worker answers the Services API only
/// once every local plugin is subscribed and the bucket is synced, so after this a request to
/// any plugin it serves is routed to it (unlike a reply from one plugin, which may come while
/// the worker is still subscribing the others).
pub async fn wait_until_listed(client: &Client, plugin: &str) {
    let started = Instant::now();
    while endpoint_data(client, plugin).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no worker lists {plugin} in $SRV.STATS after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a worker holds `queued` requests of `plugin` in its queue (a signal that the
/// requests sent before have all arrived).
pub async fn wait_until_queued(client: &Client, plugin: &str, queued: usize) {
    let started = Instant::now();
    loop {
        let data = endpoint_data(client, plugin).await;
        if data
            .as_ref()
            .is_some_and(|d| d["queued"] == serde_json::json!(queued))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{plugin}: {data:?} after 20 s, waiting for {queued} queued"
        );
    }
}

/// Calls `plugin` and checks the error code, that the message mentions `needle`, and that the
/// answer came within `within`.
pub async fn expect_error(
    client: &async_nats::Client,
    plugin: &str,
    input: Value,
    code: u16,
    needle: &str,
    within: Duration,
) {
    let started = Instant::now();
    let reply = call(client, plugin, input).await;
    let took = started.elapsed();
    assert_eq!(reply.code(), Some(code), "{plugin}: {reply:?}");
    let message = reply.message();
    assert!(
        message.contains(needle),
        "{plugin}: {message:?} should mention {needle:?}"
    );
    assert!(
        took < within,
        "{plugin}: answered after {took:?}, limit {within:?}"
    );
    if let Reply::Err { header, .. } = &reply {
        assert_eq!(header, &message, "header and body carry the same message");
    }
}
