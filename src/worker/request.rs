//! What a request says about itself in its headers, read in one place at admission.
//!
//! A request's headers carry its call depth (`Mofa-Call-Depth`, set by `call_plugin`), its
//! canary route key (`Mofa-Route-Key`), its id (`Mofa-Request-Id`, echoed in its result event)
//! and its trace context (`traceparent`). The endpoint reads them through [`RequestMeta`] and
//! nowhere else. The header map is moved out of the message, not copied: a request without
//! headers costs nothing here, and one with headers no allocation.

use std::time::Instant;

use async_nats::HeaderMap;

use crate::plugin::CallContext;
use crate::wire;

/// One request's headers and the call context they give it.
pub(crate) struct RequestMeta {
    /// Depth, deadline and admission time: what the plugin layer needs to run it.
    pub(crate) context: CallContext,
    headers: Option<HeaderMap>,
}

impl RequestMeta {
    /// Reads `headers` of a request admitted at `admitted`.
    pub(crate) fn read(headers: Option<HeaderMap>, admitted: Instant) -> Self {
        let depth = headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_CALL_DEPTH))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        Self {
            context: CallContext {
                depth,
                deadline: None,
                admitted: Some(admitted),
            },
            headers,
        }
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
    fn a_job_is_a_request_named_by_its_job_id() {
        let meta = RequestMeta::job("job-9", Instant::now());
        assert_eq!(meta.request_id(), Some("job-9"));
        assert_eq!(meta.context.depth, 0);
    }
}
