//! W3C trace context (`traceparent`, `tracestate`) in NATS message headers.
//!
//! Header names are matched exactly as written (async-nats's header map is case-sensitive), so
//! `traceparent` is lower-case as the W3C spec writes it, and as every OpenTelemetry SDK sends it.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header carrying the caller's trace and span ids.
pub const TRACEPARENT: &str = "traceparent";

/// Reads trace context from a message's headers.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// The caller's context in `headers` (an empty context when there is none).
pub(crate) fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

tokio::task_local! {
    /// The place in a trace of the request being run when it is not sampled (it has no span):
    /// set around the request's future (see `Scope::boxed`), read by [`inject`].
    pub(crate) static UNSAMPLED: SpanContext;
}

/// Adds the current span's `traceparent` (and `tracestate`) to `headers`, so the request
/// continues this trace on whichever worker answers it; for a request that is not sampled,
/// its trace with the sampled flag clear. Nothing when tracing is off.
pub fn inject(headers: &mut HeaderMap) {
    if !super::enabled() {
        return;
    }
    let current = tracing::Span::current();
    let context = if current.is_none() {
        match UNSAMPLED.try_with(|place| place.clone()) {
            Ok(place) => opentelemetry::Context::new().with_remote_span_context(place),
            Err(_) => return,
        }
    } else {
        current.context()
    };
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// A fresh `traceparent` (sampled) and its trace id, for a client that starts a trace
/// without an OpenTelemetry SDK of its own (`mofa exec`).
pub fn new_trace_parent() -> (String, String) {
    let mut bytes = [0u8; 24];
    // A failing entropy source leaves zeros, which the loop below turns into a valid id.
    let _ = getrandom::fill(&mut bytes);
    if bytes[..16].iter().all(|b| *b == 0) {
        bytes[15] = 1;
    }
    if bytes[16..].iter().all(|b| *b == 0) {
        bytes[23] = 1;
    }
    let trace_id = hex::encode(&bytes[..16]);
    let span_id = hex::encode(&bytes[16..]);
    (format!("00-{trace_id}-{span_id}-01"), trace_id)
}

/// The trace id in a message's `traceparent` header, when it holds a valid one.
#[inline]
pub fn trace_id_of_header(headers: Option<&HeaderMap>) -> Option<String> {
    trace_id_of(headers?.get(TRACEPARENT)?.as_str())
}

/// The trace id of a `traceparent` value, if it is a valid one.
fn trace_id_of(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace_id) = (parts.next()?, parts.next()?);
    let valid = version.len() == 2
        && version != "ff"
        && trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_its_trace() {
        let (header, trace_id) = new_trace_parent();
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, header.as_str());
        assert_eq!(trace_id_of_header(Some(&headers)), Some(trace_id.clone()));
        let context = extract(&headers);
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            trace_id,
            "the SDK's propagator reads what new_trace_parent writes"
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            TRACEPARENT,
            "00-00000000000000000000000000000000-0000000000000001-01",
        );
        assert_eq!(trace_id_of_header(Some(&bad)), None);
        // Case matters in NATS headers: only the W3C spelling is read.
        let mut shouted = HeaderMap::new();
        shouted.insert("Traceparent", header.as_str());
        assert_eq!(trace_id_of_header(Some(&shouted)), None);
    }
}
