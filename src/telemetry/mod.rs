//! Logs, traces and metrics: `tracing` to stderr (text or JSON), and OpenTelemetry over
//! OTLP/HTTP when an endpoint is configured.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `_METRICS_ENDPOINT`) is set, or the worker config's `[telemetry] otlp_endpoint`; the other
//! standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SDK_DISABLED`) are honoured by the SDK.
//! With no endpoint nothing is exported and the request path creates no span at all
//! ([`enabled`] is one relaxed load); with one, only the requests the sampler picks get a span,
//! decided before it is made ([`sampling`]).
//!
//! Exporting never waits on a request: spans go to the SDK's batch processor (a bounded queue
//! drained by its own thread; when it is full, spans are dropped) and metrics are read by a
//! periodic reader on its own thread. A collector that is down costs dropped data and one log
//! line (see [`Logged`]), and another when it answers again.

mod metrics;
mod propagation;
mod sampling;
mod spans;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub use metrics::{
    observe, plugin_attribute, Instruments, PluginSnapshot, ReloadCounts, ReloadOutcome, Sources,
};
pub use propagation::TRACEPARENT;
pub use propagation::{inject, new_trace_parent, trace_id_of_header, HeaderExtractor};
pub(crate) use spans::{call_failed, call_span, request_span, RequestSpan};
pub use spans::{trace_id, CurrentTrace};

/// The longest a process waits at exit for its telemetry to be sent.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// The target of the spans the request path makes, so a log filter can tell them apart.
pub const TARGET: &str = "mofa::request";

static ENABLED: AtomicBool = AtomicBool::new(false);
static IDS_IN_LOGS: AtomicBool = AtomicBool::new(false);

/// Whether log lines show request spans (JSON logs), so their ids are worth recording.
fn ids_in_logs() -> bool {
    IDS_IN_LOGS.load(Ordering::Relaxed)
}

/// Whether spans are exported: the request path makes spans only then.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `[telemetry]` section of the worker config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL of a collector (e.g. `http://127.0.0.1:4318`); traces go to
    /// `/v1/traces`, metrics to `/v1/metrics`. `OTEL_EXPORTER_OTLP_ENDPOINT` takes precedence.
    pub otlp_endpoint: Option<String>,
    /// `service.name` when `OTEL_SERVICE_NAME` is not set (default: `mofa-worker` for the
    /// worker, `mofa` for the other commands).
    pub service_name: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the request span's fields (plugin, `trace_id`,
    /// `span_id`) when tracing is on.
    Json,
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    /// The log filter when `RUST_LOG` is not set (`info`, `warn`).
    pub default_filter: &'a str,
    /// Text or JSON logs.
    pub format: LogFormat,
    /// The config file's `[telemetry]` section.
    pub config: &'a TelemetryConfig,
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor the config set one.
    pub service_name: &'a str,
}

/// The exporters [`init`] started; [`Telemetry::shutdown`] sends what they still hold.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether an exporter runs.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some() || self.meter.is_some()
    }

    /// Flushes and stops the exporters, waiting at most [`SHUTDOWN_LIMIT`]: a collector that
    /// hangs must not hold up a stopping worker (the SDK's meter provider ignores its own
    /// shutdown timeout, and an export in flight waits for the HTTP timeout). What is not sent
    /// by then is dropped. Call it outside the async runtime.
    pub fn shutdown(self) {
        if !self.exporting() {
            return;
        }
        let (done, finished) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                if let Some(tracer) = self.tracer {
                    let _ = tracer.shutdown_with_timeout(SHUTDOWN_LIMIT);
                }
                if let Some(meter) = self.meter {
                    let _ = meter.shutdown();
                }
                let _ = done.send(());
            });
        if flushing.is_ok() && finished.recv_timeout(SHUTDOWN_LIMIT).is_err() {
            tracing::warn!(
                "OpenTelemetry data not flushed within {} s at exit; dropped",
                SHUTDOWN_LIMIT.as_secs()
            );
        }
    }
}

/// The environment variable naming a signal's own endpoint.
fn endpoint_var_set(signal: &str) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// Whether `OTEL_SDK_DISABLED` or `OTEL_<SIGNAL>S_EXPORTER=none` turns a signal off.
fn signal_disabled(signal: &str) -> bool {
    let set = |var: &str, value: &str| {
        std::env::var(var).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    set("OTEL_SDK_DISABLED", "true") || set(&format!("OTEL_{signal}S_EXPORTER"), "none")
}

/// The OTLP/HTTP URL for `signal` (`TRACE`, `METRIC`) when exporting it is on: `None` when the
/// builder should read the environment, `Some(url)` from the config.
fn signal_endpoint(signal: &str, config: &TelemetryConfig, path: &str) -> Option<Option<String>> {
    if signal_disabled(signal) {
        return None;
    }
    if endpoint_var_set(signal) {
        return Some(None);
    }
    let base = config
        .otlp_endpoint
        .as_deref()?
        .trim()
        .trim_end_matches('/');
    (!base.is_empty()).then(|| Some(format!("{base}{path}")))
}

/// Whether text logs are coloured: only on a terminal, and never with `NO_COLOR` set to
/// anything (<https://no-color.org>).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global `tracing` subscriber (logs to stderr, and spans to OTLP when an
/// endpoint is set) and the global meter provider. Errors building an exporter are logged and
/// leave that signal off: a worker serves without telemetry rather than not at all.
pub fn init(setup: Setup<'_>) -> Telemetry {
    let logs = log_layer(&setup);
    let resource = resource(setup.config, setup.service_name);
    let mut errors = Vec::new();
    let tracer = span_exporter(setup.config, &resource, &mut errors);
    let meter = metric_exporter(setup.config, &resource, &mut errors);
    let spans = tracer.as_ref().map(|provider| {
        let only_ours = tracing_subscriber::filter::Targets::new()
            .with_target(TARGET, tracing::Level::TRACE)
            .with_default(tracing::Level::WARN);
        // Without busy/idle tracking and context activation: each costs clock reads or a
        // thread-local swap on every poll of a request, and nothing here reads the active
        // OpenTelemetry context (the spans' own contexts are read from the spans).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mofa-bus"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(only_ours)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if installed.is_err() {
        // Embedded in an application that already has a subscriber: leave it be.
        return Telemetry::default();
    }
    if let Some(meter) = &meter {
        opentelemetry::global::set_meter_provider(meter.clone());
        metrics::start_recording();
    }
    if tracer.is_some() {
        sampling::install();
    }
    ENABLED.store(tracer.is_some(), Ordering::Relaxed);
    IDS_IN_LOGS.store(setup.format == LogFormat::Json, Ordering::Relaxed);
    for error in errors {
        tracing::error!("{error}");
    }
    if tracer.is_some() || meter.is_some() {
        tracing::info!(
            traces = tracer.is_some(),
            metrics = meter.is_some(),
            "exporting OpenTelemetry data over OTLP/HTTP"
        );
    }
    Telemetry { tracer, meter }
}

/// Log lines on stderr, filtered by `RUST_LOG` or the setup's default: text (coloured only on
/// a terminal, without the request spans, whose fields would prefix every line logged while a
/// request runs) or JSON (with the spans, for their trace and span ids).
fn log_layer<S>(setup: &Setup<'_>) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(setup.default_filter));
    match setup.format {
        LogFormat::Text => {
            let filter = match format!("{TARGET}=off").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            };
            tracing_subscriber::fmt::layer()
                .with_ansi(colour())
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    }
}

/// The span exporter, when an endpoint is configured; a failure to build it is noted in
/// `errors` and leaves traces off.
fn span_exporter(
    config: &TelemetryConfig,
    resource: &Resource,
    errors: &mut Vec<String>,
) -> Option<SdkTracerProvider> {
    let endpoint = signal_endpoint("TRACE", config, "/v1/traces")?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    match builder.build() {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(Logged::new("spans", exporter))
                // Sampling is decided before a span is made (see `sampling`).
                .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
                .with_resource(resource.clone())
                .build(),
        ),
        Err(e) => {
            errors.push(format!("OTLP span exporter: {e}; traces are not exported"));
            None
        }
    }
}

/// The metric exporter, when an endpoint is configured; a failure to build it is noted in
/// `errors` and leaves metrics off.
fn metric_exporter(
    config: &TelemetryConfig,
    resource: &Resource,
    errors: &mut Vec<String>,
) -> Option<SdkMeterProvider> {
    let endpoint = signal_endpoint("METRIC", config, "/v1/metrics")?;
    let mut builder = opentelemetry_otlp::MetricExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    match builder.build() {
        Ok(exporter) => Some(
            SdkMeterProvider::builder()
                .with_periodic_exporter(Logged::new("metrics", exporter))
                .with_resource(resource.clone())
                .build(),
        ),
        Err(e) => {
            errors.push(format!(
                "OTLP metric exporter: {e}; metrics are not exported"
            ));
            None
        }
    }
}

/// The process's resource: the SDK's detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`)
/// over the configured or default service name.
fn resource(config: &TelemetryConfig, default_name: &str) -> Resource {
    let from_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty());
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if from_env {
        builder.build()
    } else {
        builder
            .with_service_name(
                config
                    .service_name
                    .clone()
                    .unwrap_or_else(|| default_name.to_string()),
            )
            .build()
    }
}

/// An exporter that logs the first failed export and the first success after failures, so a
/// collector that is down is reported once, not once per batch. (The SDK's own diagnostics
/// are built out: feature `internal-logs` is off.)
#[derive(Debug)]
struct Logged<E> {
    what: &'static str,
    failing: Arc<AtomicBool>,
    inner: E,
}

impl<E> Logged<E> {
    fn new(what: &'static str, inner: E) -> Self {
        Self {
            what,
            failing: Arc::default(),
            inner,
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                error = %e,
                "OpenTelemetry {} not exported (is the collector up?); dropping them until it answers",
                self.what
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("OpenTelemetry {} exported again", self.what)
            }
            _ => {}
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Logged<E>
{
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl Future<Output = OTelSdkResult> + Send {
        let exported = self.inner.export(batch);
        async move {
            let result = exported.await;
            self.note(&result);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Logged<E>
{
    fn export(
        &self,
        metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> impl Future<Output = OTelSdkResult> + Send {
        let exported = self.inner.export(metrics);
        async move {
            let result = exported.await;
            self.note(&result);
            result
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}
