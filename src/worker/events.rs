//! The one place a worker publishes events: a result event after every execution (request or
//! job) and reload events as revisions arrive, serve, fail, or a canary is dropped. Both the
//! endpoints and the bucket follower publish through here.

use async_nats::{Client, Subject};

use crate::events::{ReloadEvent, ReloadStatus, ResultEvent};
use crate::subjects;
use crate::telemetry::{ReloadCounts, ReloadOutcome};
use crate::wire;

/// Room for the headers and framing beside a message's body: a reply or event body must fit
/// the server's `max_payload` minus this.
pub(crate) const HEADROOM: usize = 512;

/// Publishes `event` on `subject`; one whose output would not fit the server's `max_payload`
/// goes out without it.
pub(crate) async fn publish_result(
    client: &Client,
    subject: &Subject,
    event: ResultEvent<'_>,
    max_payload: usize,
) {
    let encoded = wire::encode_named(&event).and_then(|body| {
        if body.len() + HEADROOM <= max_payload {
            return Ok(body);
        }
        let event = ResultEvent {
            output: None,
            ..event.clone()
        };
        wire::encode_named(&event)
    });
    let plugin = event.plugin.as_ref();
    match encoded {
        Ok(body) => {
            if let Err(e) = client.publish(subject.clone(), body).await {
                tracing::warn!(plugin, error = %e, "result event not sent");
            }
        }
        Err(e) => tracing::warn!(plugin, error = %e, "result event not encoded"),
    }
}

/// Counts a reload event's outcome and publishes it on `mofa.events.reload.<plugin>`.
pub(crate) async fn announce(
    client: &async_nats::Client,
    reloads: &ReloadCounts,
    namespace: &subjects::Namespace,
    event: ReloadEvent,
) {
    let outcome = match event.status {
        ReloadStatus::Completed => Some(ReloadOutcome::Completed),
        ReloadStatus::Failed => Some(ReloadOutcome::Failed),
        ReloadStatus::RolledBack => Some(ReloadOutcome::RolledBack),
        ReloadStatus::Started | ReloadStatus::Removed => None,
    };
    if let Some(outcome) = outcome {
        reloads.record(&event.plugin, outcome);
    }
    let plugin = event.plugin.as_str();
    match wire::encode_named(&event) {
        Ok(body) => {
            if let Err(e) = client
                .publish(namespace.reload_event(&subject_token(plugin)), body)
                .await
            {
                tracing::warn!(plugin, error = %e, "reload event not sent");
            }
        }
        Err(e) => tracing::warn!(plugin, error = %e, "reload event not encoded"),
    }
}

/// `key` as one subject token: a bucket key that is not a plugin name may hold `.` (or other
/// characters a plugin name may not), which would change the event's subject.
fn subject_token(key: &str) -> std::borrow::Cow<'_, str> {
    if subjects::validate_name(key).is_ok() {
        return key.into();
    }
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .into()
}
