//! Head sampling: whether a request is traced is decided when it is admitted, before any span
//! is made, so a request that is not sampled costs about what an untraced one does.
//!
//! The decision is the standard sampler's (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
//! read by the SDK's own [`Config`]), asked with the caller's context: a `parentbased_*`
//! sampler follows the caller's sampled flag, a ratio sampler decides a new trace by its id.
//! The SDK itself then samples every span it is given ([`Sampler::AlwaysOn`]): what reaches it
//! was decided here, and asking again would sample a ratio twice.
//!
//! Asking the SDK only when the span ends (tracing-opentelemetry's way) would pay for the span,
//! its ~20 attributes and their builder on every request, sampled or not.
//!
//! A request that is not sampled still belongs to a trace: its trace id (the caller's, or a new
//! one) goes into its result event, and the calls it makes over the bus send `traceparent`
//! with the sampled flag clear, so the plugins down the chain do not start traces of their own.
//!
//! [`Config`]: opentelemetry_sdk::trace::Config
//! [`Sampler::AlwaysOn`]: opentelemetry_sdk::trace::Sampler::AlwaysOn

use std::sync::OnceLock;

use async_nats::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceFlags};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample};

use super::propagation;

/// The configured sampler, read from the environment once.
static SAMPLER: OnceLock<Box<dyn ShouldSample>> = OnceLock::new();

fn sampler() -> &'static dyn ShouldSample {
    SAMPLER
        .get_or_init(|| opentelemetry_sdk::trace::Config::default().sampler)
        .as_ref()
}

/// Reads the sampler from the environment now, rather than on the first request.
pub(super) fn install() {
    let _ = sampler();
}

/// What to do with one request.
pub(super) enum Head {
    /// Trace it, as the child of this context (empty for a new trace).
    Sampled(Context),
    /// Do not trace it; this is its place in a trace (sampled flag clear), for its result event
    /// and the calls it makes.
    NotSampled(SpanContext),
}

/// Decides whether the request named `name`, with `headers`, is traced.
pub(super) fn decide(name: &str, headers: Option<&HeaderMap>) -> Head {
    let parent = match headers {
        Some(headers) if headers.get(propagation::TRACEPARENT).is_some() => {
            propagation::extract(headers)
        }
        _ => Context::new(),
    };
    let ids = RandomIdGenerator::default();
    let trace_id = {
        let caller = parent.span();
        let caller = caller.span_context();
        if caller.is_valid() {
            caller.trace_id()
        } else {
            ids.new_trace_id()
        }
    };
    let result =
        sampler().should_sample(Some(&parent), trace_id, name, &SpanKind::Consumer, &[], &[]);
    match result.decision {
        SamplingDecision::RecordAndSample => Head::Sampled(parent),
        // Recorded but not exported would buy nothing here: nothing reads a span's data in
        // the process. The sampler's trace state is the caller's: it goes on with the calls.
        SamplingDecision::RecordOnly | SamplingDecision::Drop => {
            Head::NotSampled(SpanContext::new(
                trace_id,
                ids.new_span_id(),
                TraceFlags::default(),
                false,
                result.trace_state,
            ))
        }
    }
}
