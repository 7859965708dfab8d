//! What a request says about itself in its headers, read in one place at admission.
//!
//! A request's headers carry its call depth (`Mofa-Call-Depth`, set by `call_plugin`), its
//! canary route key (`Mofa-Route-Key`), its id (`Mofa-Request-Id`, echoed in its result event),
//! its caller's deadline (`Mofa-Deadline`) and its trace context (`traceparent`). The endpoint reads them through [`RequestMeta`] and
//! nowhere else. The header map is moved out of the message, not copied: a request without
//! headers costs nothing here, and one with headers no allocation.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;

use crate::plugin::CallContext;
use crate::wire;

/// One request's headers and the call context they give it.
pub(crate) struct RequestMeta {
    /// Depth, deadline and admission time: what the plugin layer needs to run it.
    pub(crate) context: CallContext,
    headers: Option<HeaderMap>,
}

/// The instant of a `Mofa-Deadline` header (Unix milliseconds), by this process's clock; a
/// value that does not parse is ignored. One already past maps to `now`.
fn deadline(value: &str, now: Instant) -> Option<Instant> {
    let at_ms: u64 = value.trim().parse().ok()?;
    let left = at_ms.saturating_sub(wire::unix_ms());
    now.checked_add(Duration::from_millis(left))
}

impl RequestMeta {
    /// Reads `headers` of a request admitted at `admitted`.
    pub(crate) fn read(headers: Option<HeaderMap>, admitted: Instant) -> Self {
        let depth = headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_CALL_DEPTH))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        let deadline = headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_DEADLINE))
            .and_then(|v| deadline(v.as_str(), admitted));
        Self {
            context: CallContext {
                depth,
                deadline,
                admitted: Some(admitted),
            },
            headers,
        }
    }

    /// The caller's deadline (`Mofa-Deadline`), if it gave one.
    pub(crate) fn caller_deadline(&self) -> Option<Instant> {
        self.context.deadline
    }

    /// Whether the caller's deadline has passed at `now`: it no longer waits for an answer.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.context
            .deadline
            .is_some_and(|deadline| now >= deadline)
    }

    /// A durable job, started at `started`: a request whose id is the job's id.
    pub(crate) fn job(id: &str, started: Instant) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(wire::HEADER_REQUEST_ID, id);
        Self::read(Some(headers), started)
    }

    /// The headers as they came, for the trace context.
    pub(crate) fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    /// The caller's canary route key: requests with the same key go to the same revision.
    pub(crate) fn route_key(&self) -> Option<&str> {
        self.header(wire::HEADER_ROUTE_KEY)
    }

    /// The caller's request id, which its result event repeats.
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.header(wire::HEADER_REQUEST_ID)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_headers_is_a_client_call_at_depth_zero() {
        let meta = RequestMeta::read(None, Instant::now());
        assert_eq!(meta.context.depth, 0);
        assert_eq!(meta.route_key(), None);
        assert_eq!(meta.request_id(), None);
    }

    #[test]
    fn headers_give_depth_route_key_and_request_id() {
        let mut headers = HeaderMap::new();
        headers.insert(wire::HEADER_CALL_DEPTH, "3");
        headers.insert(wire::HEADER_ROUTE_KEY, "customer-7");
        headers.insert(wire::HEADER_REQUEST_ID, "r-1");
        let meta = RequestMeta::read(Some(headers), Instant::now());
        assert_eq!(meta.context.depth, 3);
        assert_eq!(meta.route_key(), Some("customer-7"));
        assert_eq!(meta.request_id(), Some("r-1"));
    }

    #[test]
    fn a_depth_that_is_not_a_number_counts_as_zero() {
        let mut headers = HeaderMap::new();
        headers.insert(wire::HEADER_CALL_DEPTH, "deep");
        assert_eq!(
            RequestMeta::read(Some(headers), Instant::now())
                .context
                .depth,
            0
        );
    }

    #[test]
    fn a_deadline_header_bounds_the_request_and_one_past_has_expired() {
        let now = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert(
            wire::HEADER_DEADLINE,
            (wire::unix_ms() + 20_000).to_string().as_str(),
        );
        let meta = RequestMeta::read(Some(headers), now);
        let left = meta.caller_deadline().expect("a deadline") - now;
        assert!(
            left > Duration::from_secs(19) && left <= Duration::from_secs(20),
            "{left:?}"
        );
        assert!(!meta.expired(now));
        let mut headers = HeaderMap::new();
        headers.insert(wire::HEADER_DEADLINE, "1000");
        assert!(RequestMeta::read(Some(headers), now).expired(now));
        let mut headers = HeaderMap::new();
        headers.insert(wire::HEADER_DEADLINE, "soon");
        assert_eq!(
            RequestMeta::read(Some(headers), now).caller_deadline(),
            None
        );
    }

    #[test]
    fn a_job_is_a_request_named_by_its_job_id() {
        let meta = RequestMeta::job("job-9", Instant::now());
        assert_eq!(meta.request_id(), Some("job-9"));
        assert_eq!(meta.context.depth, 0);
    }
}
