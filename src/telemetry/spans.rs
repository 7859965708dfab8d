//! The spans of the request path: `mofa.exec <plugin>` for each request a worker takes (the
//! caller's child when it sent `traceparent`), and `mofa.call <plugin>` for each call a plugin
//! makes to another. Attributes follow the OpenTelemetry messaging conventions.
//!
//! The phases of a request are attributes of its span, in microseconds: `mofa.queue_wait_us`
//! (admission to start), `mofa.decode_us`, `mofa.execute_us` and `mofa.reply_us`. One span per
//! request keeps tracing's cost per request low; the calls a plugin makes are child spans, so
//! a trace viewer shows where a chain of plugins spent its time.
//!
//! Only a sampled request has a span (see [`super::sampling`]); one that is not keeps its place
//! in the trace, for its result event and the `traceparent` of its calls.
//!
//! Integers are recorded as `i64`: `tracing-opentelemetry` turns a `u64` field into a string
//! attribute.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::sampling::{self, Head};
use super::{enabled, propagation, TARGET};

/// The span of one request: a tracing span when it is sampled, else (tracing on) its place in
/// a trace without a span, else nothing.
#[derive(Clone)]
pub(crate) struct RequestSpan {
    span: Span,
    unsampled: Option<SpanContext>,
}

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
        return RequestSpan::none();
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
    let parent = match sampling::decide(name, headers) {
        Head::Sampled(parent) => parent,
        Head::NotSampled(place) => {
            return RequestSpan {
                span: Span::none(),
                unsampled: Some(place),
            }
        }
    };
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
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
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
    RequestSpan {
        span,
        unsampled: None,
    }
}

/// How a request's future runs: inside its span (sampled), under its unsampled place in a
/// trace (so the calls it makes say "not sampled"), or bare (tracing off: no wrapper at all).
pub(crate) enum Scope {
    Traced(Span),
    Unsampled(SpanContext),
    Untraced,
}

impl Scope {
    /// `request`, wrapped as this scope needs, in one box: whatever moves it next (a task, a
    /// sandbox job) moves a pointer rather than the whole future.
    #[inline]
    pub(crate) fn boxed<'a, F>(
        self,
        request: F,
    ) -> Pin<Box<dyn Future<Output = F::Output> + Send + 'a>>
    where
        F: Future + Send + 'a,
    {
        match self {
            Scope::Traced(span) => Box::pin(request.instrument(span)),
            Scope::Unsampled(place) => Box::pin(propagation::UNSAMPLED.scope(place, request)),
            Scope::Untraced => Box::pin(request),
        }
    }
}

impl RequestSpan {
    /// No span (a durable job, or tracing off).
    #[inline]
    pub(crate) fn none() -> RequestSpan {
        RequestSpan {
            span: Span::none(),
            unsampled: None,
        }
    }

    /// How the request's future is to run.
    #[inline]
    pub(crate) fn scope(&self) -> Scope {
        if !self.span.is_none() {
            Scope::Traced(self.span.clone())
        } else if let Some(place) = &self.unsampled {
            Scope::Unsampled(place.clone())
        } else {
            Scope::Untraced
        }
    }

    /// Whether this request has a span (its phases are worth timing).
    #[inline]
    pub(crate) fn is_recording(&self) -> bool {
        !self.span.is_none()
    }

    /// What served the request.
    #[inline]
    pub(crate) fn served(&self, kind: &str, revision: Option<u64>) {
        if self.is_recording() {
            self.span.record("mofa.kind", kind);
            self.span
                .record("mofa.revision", revision.map(|r| r as i64));
        }
    }

    /// How long a phase (`mofa.queue_wait_us`, `mofa.decode_us`, …) took.
    #[inline]
    pub(crate) fn phase(&self, field: &'static str, took: Duration) {
        if self.is_recording() {
            self.span.record(field, took.as_micros() as i64);
        }
    }

    /// The request ended in the error `code` (its message is formatted only when traced).
    #[inline]
    pub(crate) fn failed(&self, code: u16, message: &dyn std::fmt::Display) {
        call_failed(&self.span, code, message);
    }

    /// The trace this request belongs to: its span's when sampled, its unsampled place's when
    /// not, else (tracing off) the caller's `traceparent`'s, so result events name the caller's
    /// trace even then.
    #[inline]
    pub(crate) fn trace_id(&self, headers: Option<&HeaderMap>) -> Option<String> {
        if self.span.is_none() {
            return match &self.unsampled {
                Some(place) => Some(place.trace_id().to_string()),
                None => propagation::trace_id_of_header(headers),
            };
        }
        let context = self.span.context();
        let ids = context.span().span_context().clone();
        ids.is_valid().then(|| ids.trace_id().to_string())
    }
}

/// The running request's place in its trace (its span, or its unsampled context), taken to
/// the thread that goes on with its work, so the calls made there continue the same trace.
pub struct CurrentTrace {
    span: Span,
    unsampled: Option<SpanContext>,
}

impl CurrentTrace {
    /// The trace of the request running on this thread (nothing when tracing is off).
    #[inline]
    pub fn capture() -> CurrentTrace {
        if !enabled() {
            return CurrentTrace {
                span: Span::none(),
                unsampled: None,
            };
        }
        CurrentTrace {
            span: Span::current(),
            unsampled: propagation::UNSAMPLED.try_with(Clone::clone).ok(),
        }
    }

    /// Runs `f` in this trace.
    #[inline]
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        let _span = self.span.enter();
        match self.unsampled {
            Some(place) => propagation::UNSAMPLED.sync_scope(place, f),
            None => f(),
        }
    }
}

/// The span of one call from a plugin to `plugin` (on `subject`), a child of the current span;
/// `local` when this worker serves the callee (no bus hop). None when the calling request has
/// no span (tracing off, or not sampled): a call is never the root of a trace of its own.
pub(crate) fn call_span(plugin: &str, subject: &str, depth: u32, local: bool) -> Span {
    if !enabled() || Span::current().is_none() {
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
