//! The spans of the request path: `mofa.exec <plugin>` for each request a worker takes (the
//! caller's child when it sent `traceparent`), and `mofa.call <plugin>` for each call a plugin
//! makes to another. Attributes follow the OpenTelemetry messaging conventions.
//!
//! The phases of a request are attributes of its span, in microseconds: `mofa.queue_wait_us`
//! (admission to start), `mofa.decode_us`, `mofa.execute_us` and `mofa.reply_us`. One span per
//! request keeps tracing's cost per request low; the calls a plugin makes are child spans, so
//! a trace viewer shows where a chain of plugins spent its time.
//!
//! Integers are recorded as `i64`: `tracing-opentelemetry` turns a `u64` field into a string
//! attribute.

use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry::trace::TraceContextExt;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{enabled, propagation, TARGET};

/// The span of one request; a no-op when tracing is off.
#[derive(Clone)]
pub(crate) struct RequestSpan(Span);

/// A request's span, started at admission. With tracing off this is one load and a branch,
/// inlined where the request is admitted.
#[inline]
pub(crate) fn request_span(
    name: &str,
    subject: &str,
    plugin: &str,
    worker: &str,
    headers: Option<&HeaderMap>,
    body_size: usize,
) -> RequestSpan {
    if !enabled() {
        return RequestSpan(Span::none());
    }
    traced_request_span(name, subject, plugin, worker, headers, body_size)
}

#[inline(never)]
fn traced_request_span(
    name: &str,
    subject: &str,
    plugin: &str,
    worker: &str,
    headers: Option<&HeaderMap>,
    body_size: usize,
) -> RequestSpan {
    let span = tracing::info_span!(
        target: TARGET,
        "mofa.exec",
        otel.name = name,
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = subject,
        messaging.consumer.group.name = crate::subjects::QUEUE_GROUP,
        messaging.message.body.size = body_size as i64,
        mofa.plugin = plugin,
        mofa.kind = Empty,
        mofa.revision = Empty,
        mofa.worker = worker,
        mofa.queue_wait_us = Empty,
        mofa.decode_us = Empty,
        mofa.execute_us = Empty,
        mofa.reply_us = Empty,
        error.type = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some(headers) = headers {
        let parent = propagation::extract(headers);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    // The ids as fields too, so JSON log lines written during the request carry them (text
    // logs leave request spans out: no need to pay for them then).
    if super::ids_in_logs() {
        let context = span.context();
        let ids = context.span().span_context().clone();
        if ids.is_valid() {
            span.record("trace_id", ids.trace_id().to_string());
            span.record("span_id", ids.span_id().to_string());
        }
    }
    RequestSpan(span)
}

impl RequestSpan {
    /// No span (a durable job, or tracing off).
    #[inline]
    pub(crate) fn none() -> RequestSpan {
        RequestSpan(Span::none())
    }

    /// The tracing span, to run the request in.
    #[inline]
    pub(crate) fn span(&self) -> &Span {
        &self.0
    }

    /// Whether this request is traced (its phases are worth timing).
    #[inline]
    pub(crate) fn is_recording(&self) -> bool {
        !self.0.is_none()
    }

    /// What served the request.
    #[inline]
    pub(crate) fn served(&self, kind: &str, revision: Option<u64>) {
        if !self.0.is_none() {
            self.0.record("mofa.kind", kind);
            self.0.record("mofa.revision", revision.map(|r| r as i64));
        }
    }

    /// How long a phase (`mofa.queue_wait_us`, `mofa.decode_us`, …) took.
    #[inline]
    pub(crate) fn phase(&self, field: &'static str, took: Duration) {
        if !self.0.is_none() {
            self.0.record(field, took.as_micros() as i64);
        }
    }

    /// The request ended in the error `code` (its message is formatted only when traced).
    #[inline]
    pub(crate) fn failed(&self, code: u16, message: &dyn std::fmt::Display) {
        call_failed(&self.0, code, message);
    }

    /// The trace this request belongs to: its span's when tracing is on, else the caller's
    /// `traceparent`'s, so result events name the caller's trace even then.
    #[inline]
    pub(crate) fn trace_id(&self, headers: Option<&HeaderMap>) -> Option<String> {
        if self.0.is_none() {
            return propagation::trace_id_of_header(headers);
        }
        let context = self.0.context();
        let ids = context.span().span_context().clone();
        ids.is_valid().then(|| ids.trace_id().to_string())
    }
}

/// The span of one call from a plugin to `plugin` (on `subject`), a child of the current span;
/// `local` when this worker serves the callee (no bus hop).
pub(crate) fn call_span(plugin: &str, subject: &str, depth: u32, local: bool) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "mofa.call",
        otel.name = format!("mofa.call {plugin}"),
        otel.kind = if local { "internal" } else { "client" },
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = subject,
        mofa.plugin = plugin,
        mofa.call.depth = i64::from(depth),
        mofa.call.local = local,
        error.type = Empty,
    )
}

/// Marks a span (a request's or a call's) as failed with `code`.
pub(crate) fn call_failed(span: &Span, code: u16, message: &dyn std::fmt::Display) {
    if !span.is_none() {
        span.record("error.type", code.to_string());
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", message.to_string());
    }
}

/// The trace id of `span`, when tracing is on.
pub fn trace_id(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    ids.is_valid().then(|| ids.trace_id().to_string())
}
