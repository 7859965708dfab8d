//! One plugin served on the bus: subscription, admission, execution, reply, result event.
//!
//! The subscription is read by one task that admits: it takes a concurrency permit and starts
//! the request (finishing it on the spot if it never has to wait, spawning it otherwise). When
//! `max_concurrency` requests are in flight, a request waits in the plugin's queue, in arrival
//! order, for at most `queue_wait_ms`; when `max_queue` requests already wait, or its wait runs
//! out, it is answered 503. Nothing queues without bound, and every admitted request gets a
//! reply. The permit is released before the reply is published, so a client keeping exactly
//! `max_concurrency` requests in flight never waits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::{Client, HeaderMap, Message, Subject, Subscriber};
use futures::{FutureExt, StreamExt};
use opentelemetry::KeyValue;
use std::panic::AssertUnwindSafe;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::canary::CanaryRoute;
use super::events::HEADROOM;
use super::request::RequestMeta;
use crate::distribution::Revision;
use crate::events::{ReloadEvent, ReloadStatus, ResultEvent};
use crate::plugin::{
    block_on, panic_message, CallContext, ManagedPlugin, PluginError, SandboxPool,
};
use crate::subjects::Namespace;
use crate::telemetry::{self, Instruments, PluginSnapshot, ReloadCounts, RequestSpan};
use crate::wire::{self, Value};

/// Counters for the Services API `STATS` reply. Updated with atomics; the last error takes a
/// lock only when there is an error.
#[derive(Debug, Default)]
pub struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    last_error: Mutex<Option<(u16, String)>>,
    /// Error replies per code (updated under the same rare lock as `last_error`).
    by_code: Mutex<BTreeMap<u16, u64>>,
    /// Requests waiting in the queue now.
    queued: AtomicUsize,
    /// Requests answered 503 because the queue was full or their wait ran out.
    refused: AtomicU64,
    /// Requests not run because their caller's deadline (`Mofa-Deadline`) had passed.
    expired: AtomicU64,
}

impl EndpointStats {
    fn record(&self, elapsed: Duration, error: Option<&PluginError>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if let Some(error) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let code = error.code().as_u16();
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((code, error.to_string()));
            *self
                .by_code
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(code)
                .or_default() += 1;
        }
    }

    /// Requests answered (including errors).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Total processing time.
    pub fn processing_time(&self) -> Duration {
        Duration::from_nanos(self.processing_ns.load(Ordering::Relaxed))
    }

    /// Requests waiting for a free slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests refused (503) because the queue was full or they could not start in time.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Requests not run (408) because their caller's deadline had passed, on arrival or while
    /// they waited.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Error replies per code.
    pub fn errors_by_code(&self) -> Vec<(u16, u64)> {
        let by_code = self.by_code.lock().unwrap_or_else(|e| e.into_inner());
        by_code.iter().map(|(code, n)| (*code, *n)).collect()
    }

    /// The last error as (code, message).
    pub fn last_error(&self) -> Option<(u16, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The plugin revision an endpoint serves; swapped atomically on reload. A request keeps the
/// `Served` it started with, so it finishes on that revision.
pub(crate) struct Served {
    pub(crate) plugin: Arc<ManagedPlugin>,
    pub(crate) revision: Option<Revision>,
    /// `Mofa-Revision` header value, precomputed.
    revision_header: Option<String>,
    /// A canary revision answering a share of the requests beside this one.
    pub(crate) canary: Option<(Box<Served>, CanaryRoute)>,
    /// This is the canary of another revision (replies say so in `Mofa-Canary`).
    is_canary: bool,
}

impl Served {
    pub(crate) fn new(plugin: Arc<ManagedPlugin>, revision: Option<Revision>) -> Self {
        let revision_header = revision.as_ref().map(|r| r.number.to_string());
        Self {
            plugin,
            revision,
            revision_header,
            canary: None,
            is_canary: false,
        }
    }

    /// This revision with `canary` beside it, routed as `route` says.
    pub(crate) fn with_canary(mut self, mut canary: Served, route: CanaryRoute) -> Self {
        canary.is_canary = true;
        self.canary = Some((Box::new(canary), route));
        self
    }

    /// This revision alone (its canary dropped).
    fn alone(&self) -> Served {
        Served::new(self.plugin.clone(), self.revision.clone())
    }

    /// The variant that answers a request of `plugin` with this route key: the canary's, with
    /// its route, or this one.
    fn pick(&self, plugin: &str, route_key: Option<&str>) -> (&Served, Option<&CanaryRoute>) {
        match &self.canary {
            Some((canary, route)) if route.takes(plugin, route_key) => (canary, Some(route)),
            _ => (self, None),
        }
    }
}

/// How a request ended.
enum Outcome {
    /// It ran: its output and the output's encoding, or its error, after `elapsed`.
    Ran {
        result: Result<(Value, bytes::Bytes), PluginError>,
        elapsed: Duration,
    },
    /// It never ran (503: the queue was full or its wait ran out).
    Refused(PluginError),
    /// It never ran: its caller's deadline passed before it could start (408).
    Expired(PluginError),
}

/// Everything a request of one plugin needs, shared by its tasks.
pub(crate) struct Endpoint {
    pub(crate) name: String,
    served: ArcSwap<Served>,
    pub(crate) subject: String,
    pub(crate) stats: Arc<EndpointStats>,
    client: Client,
    permits: Arc<Semaphore>,
    limit: usize,
    max_queue: usize,
    queue_wait: Duration,
    /// The connected server's `max_payload`: the largest reply it will carry.
    max_payload: usize,
    pool: Arc<SandboxPool>,
    runtime: tokio::runtime::Handle,
    event_subject: Subject,
    worker_id: Arc<str>,
    events: bool,
    include_output: bool,
    instruments: Arc<Instruments>,
    /// The environment's subjects.
    namespace: Namespace,
    /// Reload outcomes, where a canary dropped for its error rate counts as rolled back.
    reloads: Arc<ReloadCounts>,
    /// `mofa.plugin = <name>`, built once for the duration histogram.
    plugin_attribute: KeyValue,
    /// `mofa.exec <name>`, the name of its requests' spans.
    span_name: String,
}

impl Endpoint {
    pub(crate) fn new(
        served: Served,
        client: Client,
        config: &crate::config::WorkerConfig,
        worker_id: Arc<str>,
        pool: Arc<SandboxPool>,
        instruments: Arc<Instruments>,
        reloads: Arc<ReloadCounts>,
    ) -> Self {
        let name = served.plugin.id().to_string();
        let namespace = config.reload.namespace();
        let max_payload = match client.server_info().max_payload {
            0 => usize::MAX,
            max => max,
        };
        Self {
            subject: namespace.exec(&name),
            plugin_attribute: telemetry::plugin_attribute(&name),
            span_name: format!("mofa.exec {name}"),
            event_subject: Subject::from(namespace.result_event(&name)),
            namespace,
            name,
            served: ArcSwap::from_pointee(served),
            stats: Arc::new(EndpointStats::default()),
            client,
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            limit: config.max_concurrency,
            max_queue: config.max_queue,
            queue_wait: Duration::from_millis(config.queue_wait_ms),
            max_payload,
            pool,
            runtime: tokio::runtime::Handle::current(),
            worker_id,
            events: config.events.results,
            include_output: config.events.include_output,
            instruments,
            reloads,
        }
    }

    /// Counts one answered request (or job) in the Services API stats and the duration metric.
    fn record(&self, elapsed: Duration, error: Option<&PluginError>) {
        self.stats.record(elapsed, error);
        self.instruments.record(
            &self.plugin_attribute,
            error.map(|e| e.code().as_u16()),
            elapsed,
        );
    }

    /// This endpoint's counts, for the metrics.
    pub(crate) fn snapshot(&self) -> PluginSnapshot {
        PluginSnapshot {
            plugin: self.name.clone(),
            requests: self.stats.requests(),
            errors: self.stats.errors_by_code(),
            refused: self.stats.refused(),
            in_flight: (self.limit - self.permits.available_permits()) as u64,
            queued: self.stats.queued() as u64,
        }
    }

    /// Waits up to `limit` until no request of this endpoint runs or waits; whether it got
    /// there. Call it once the subscription is drained: taking every permit queues behind the
    /// requests already waiting (the semaphore is FIFO), so they run first.
    pub(crate) async fn idle_within(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.permits.acquire_many(all))
            .await
            .is_ok_and(|permits| permits.is_ok())
    }

    /// What this endpoint serves now.
    pub(crate) fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Serves `served` from now on; requests already running finish on what they started with.
    pub(crate) fn swap(&self, served: Served) -> Arc<Served> {
        self.served.swap(Arc::new(served))
    }

    /// Reads the subscription until the worker shuts down or the endpoint is removed, then
    /// drains it: the server stops routing requests here, and every request already routed here
    /// is still answered.
    pub(crate) async fn serve(
        self: Arc<Self>,
        mut requests: Subscriber,
        mut shutdown: watch::Receiver<bool>,
        mut removed: watch::Receiver<bool>,
        tracker: TaskTracker,
    ) {
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => None,
                _ = removed.wait_for(|stop| *stop) => None,
                message = requests.next() => match message {
                    Some(message) => Some(message),
                    None => return,
                },
            };
            match next {
                Some(message) => self.admit(message, &tracker).await,
                None => break,
            }
        }
        if let Err(e) = requests.drain().await {
            tracing::warn!(plugin = %self.name, error = %e, "drain failed");
            return;
        }
        // The subscription ends when the server confirms the unsubscription. Without a server
        // nothing more arrives: take what is here already and stop.
        loop {
            let message = tokio::select! {
                message = requests.next() => message,
                () = super::shutdown::disconnected(&self.client) => {
                    while let Some(Some(message)) = requests.next().now_or_never() {
                        self.admit(message, &tracker).await;
                    }
                    break;
                }
            };
            match message {
                Some(message) => self.admit(message, &tracker).await,
                None => break,
            }
        }
        tracing::debug!(plugin = %self.name, "endpoint drained");
    }

    /// Starts `message`, queues it, or (queue full) refuses it here: a refusal costs one
    /// publish and no task, so a flood of them takes no memory beyond the message itself.
    async fn admit(self: &Arc<Self>, mut message: Message, tracker: &TaskTracker) {
        // The deadline counts from here: time spent queued for a slot or a sandbox thread is
        // part of it.
        let meta = RequestMeta::read(message.headers.take(), Instant::now());
        let span = telemetry::request_span(
            &self.span_name,
            &self.subject,
            &self.name,
            &self.worker_id,
            meta.headers(),
            message.payload.len(),
        );
        if meta.expired(Instant::now()) {
            self.refuse(&message, &meta, &span, None).await;
            return;
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            self.start(message, permit, meta, span, tracker);
            return;
        }
        if self.stats.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let error = PluginError::Unavailable(format!(
                "plugin {} is saturated: {} requests in flight and {} waiting on this worker (max_concurrency, max_queue); retry, or add workers",
                self.name, self.limit, self.max_queue
            ));
            self.refuse(&message, &meta, &span, Some(error)).await;
            return;
        }
        let endpoint = self.clone();
        let waiting = tracker.clone();
        tracker.spawn(async move {
            let start_by = endpoint.start_by(&endpoint.served(), &meta.context);
            let permit =
                tokio::time::timeout_at(start_by.into(), endpoint.permits.clone().acquire_owned())
                    .await;
            endpoint.stats.queued.fetch_sub(1, Ordering::Relaxed);
            match permit {
                Ok(Ok(permit)) => endpoint.start(message, permit, meta, span, &waiting),
                _ => {
                    let error = endpoint.not_started();
                    endpoint.refuse(&message, &meta, &span, Some(error)).await;
                }
            }
        });
    }

    /// Runs an admitted request that holds its permit.
    fn start(
        self: &Arc<Self>,
        message: Message,
        permit: OwnedSemaphorePermit,
        meta: RequestMeta,
        span: RequestSpan,
        tracker: &TaskTracker,
    ) {
        let depth = meta.context.depth;
        let endpoint = self.clone();
        // A sampled request runs inside its span; an untraced one without any wrapper (no
        // enter and exit on every poll).
        let mut request = span
            .scope()
            .boxed(endpoint.clone().handle(message, permit, meta, span));
        let served = self.served();
        let handed_off = crate::kinds::is_sandboxed(served.plugin.kind())
            && (depth > 0 || served.canary.is_some() || !served.plugin.starts_inline());
        if handed_off {
            // Sandboxed plugins run on a sandbox thread anyway: handle the whole request
            // there (execute, reply, event) instead of hopping back to an async thread.
            let request = tracker.track_future(request);
            let runtime = self.runtime.clone();
            let job = move || {
                let _context = runtime.enter();
                block_on(request);
            };
            // A request from another plugin goes first: that plugin holds a thread while it
            // waits (see `SandboxPool::wait_for_call`).
            let queued = if depth > 0 {
                self.pool.spawn_nested(job)
            } else {
                self.pool.spawn(job)
            };
            if let Err(e) = queued {
                tracing::error!(plugin = %endpoint.name, error = %e, "request dropped");
            }
        } else {
            // Most native plugins, and short scripts that start inline, finish without ever
            // waiting: poll the request once here and only pay for a task when it has to wait
            // (I/O, backpressure, a call that moved to the sandbox pool).
            let mut cx = Context::from_waker(Waker::noop());
            if request.as_mut().poll(&mut cx).is_pending() {
                tracker.spawn(request);
            }
        }
    }

    /// When a request must have started: with a caller's deadline (`Mofa-Deadline`), by that
    /// deadline, at most `queue_wait_ms` after admission (the caller says how long it waits;
    /// once started the plugin has its whole timeout, within the deadline). Without one,
    /// `queue_wait_ms` after admission, or, for a plugin with its own deadline, halfway to it
    /// if that comes first, so a request that starts has at least half its time to run
    /// (instead of starting only to time out).
    fn start_by(&self, served: &Served, context: &CallContext) -> Instant {
        let admitted = context.admitted.unwrap_or_else(Instant::now);
        if let Some(deadline) = context.deadline {
            return deadline.min(admitted + self.queue_wait);
        }
        let wait = served.plugin.timeout().map_or(self.queue_wait, |timeout| {
            (timeout / 2).min(self.queue_wait)
        });
        admitted + wait
    }

    /// The 503 for a request that could not start in time.
    fn not_started(&self) -> PluginError {
        PluginError::Unavailable(format!(
            "plugin {} could not start in time (queue_wait_ms = {} ms, or half the plugin's timeout_ms): {} requests in flight and {} waiting on this worker; retry, or add workers",
            self.name,
            self.queue_wait.as_millis(),
            self.limit - self.permits.available_permits(),
            self.stats.queued()
        ))
    }

    /// Answers a request that never ran: with 408 when its caller's deadline has passed (the
    /// caller most likely stopped waiting; counted as `expired`), else with 503 `error`.
    async fn refuse(
        &self,
        message: &Message,
        meta: &RequestMeta,
        span: &RequestSpan,
        error: Option<PluginError>,
    ) {
        let served = self.served();
        span.served(
            served.plugin.kind().as_str(),
            served.revision.as_ref().map(|r| r.number),
        );
        let outcome = match error {
            Some(error) if !meta.expired(Instant::now()) => Outcome::Refused(error),
            _ => Outcome::Expired(PluginError::Timeout(format!(
                "not run: the caller's deadline ({}) passed before plugin {} could start; give it more time, or add workers",
                wire::HEADER_DEADLINE,
                self.name
            ))),
        };
        self.respond(message.reply.as_ref(), &served, meta, span, outcome)
            .await;
    }

    async fn handle(
        self: Arc<Self>,
        message: Message,
        permit: OwnedSemaphorePermit,
        mut meta: RequestMeta,
        span: RequestSpan,
    ) {
        let started = Instant::now();
        let served = self.served();
        if let Some(admitted) = meta.context.admitted {
            span.phase(
                "mofa.queue_wait_us",
                started.saturating_duration_since(admitted),
            );
        }
        // A request that waited for a sandbox thread until its deadline is refused like one
        // that waited for a slot, rather than started with no time left.
        if started >= self.start_by(&served, &meta.context) {
            drop(permit);
            let error = self.not_started();
            self.refuse(&message, &meta, &span, Some(error)).await;
            return;
        }
        // A caller that states its deadline gets the plugin's whole timeout from here, within
        // that deadline; otherwise the timeout counts from admission.
        if meta.caller_deadline().is_some() {
            meta.context.admitted = Some(started);
        }
        let (variant, canary) = served.pick(&self.name, meta.route_key());
        span.served(
            variant.plugin.kind().as_str(),
            variant.revision.as_ref().map(|r| r.number),
        );
        let result = self
            .execute(variant, &message.payload, meta.context, &span)
            .await;
        drop(permit);
        let elapsed = started.elapsed();
        // A canary past its error rate stops taking requests before this one is answered, so
        // a caller's next request already goes to the stable revision.
        let dropped = canary
            .and_then(|route| route.tally(result.is_err()))
            .filter(|_| self.stop_canary(&served));
        let outcome = Outcome::Ran { result, elapsed };
        self.respond(message.reply.as_ref(), variant, &meta, &span, outcome)
            .await;
        if let Some(reason) = dropped {
            self.announce_dropped(&served, reason).await;
        }
    }

    /// The one place a request's outcome leaves the worker: the reply to `reply` (the revision
    /// that answered in `Mofa-Revision`, a canary's in `Mofa-Canary`, an error's code and text
    /// in the Services API error headers), the stats and duration metric, and, for a request
    /// that ran, its result event.
    async fn respond(
        &self,
        reply: Option<&Subject>,
        served: &Served,
        meta: &RequestMeta,
        span: &RequestSpan,
        outcome: Outcome,
    ) {
        let (result, elapsed, ran) = match outcome {
            Outcome::Ran { result, elapsed } => (result, elapsed, true),
            Outcome::Refused(error) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                (Err(error), Duration::ZERO, false)
            }
            Outcome::Expired(error) => {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                (Err(error), Duration::ZERO, false)
            }
        };
        if let Err(error) = &result {
            span.failed(error.code().as_u16(), error);
        }
        if let Some(reply) = reply {
            let replying = span.is_recording().then(Instant::now);
            self.send_reply(reply, served, &result).await;
            if let Some(replying) = replying {
                span.phase("mofa.reply_us", replying.elapsed());
            }
        }
        self.record(elapsed, result.as_ref().err());
        if ran && self.events {
            let trace_id = span.trace_id(meta.headers());
            let output = result.map(|(output, _)| output);
            self.publish_event(meta.request_id(), trace_id, served, output, elapsed)
                .await;
        }
    }

    /// Publishes the reply to one request: the output's encoding, or the error as
    /// `{code, message}` with the error headers.
    async fn send_reply(
        &self,
        reply: &Subject,
        served: &Served,
        result: &Result<(Value, bytes::Bytes), PluginError>,
    ) {
        let mut headers = served.revision_header.as_ref().map(|revision| {
            let mut headers = HeaderMap::new();
            headers.insert(wire::HEADER_REVISION, revision.as_str());
            if served.is_canary {
                headers.insert(wire::HEADER_CANARY, "true");
            }
            headers
        });
        let body = match result {
            Ok((_, body)) => body.clone(),
            Err(error) => {
                let code = error.code();
                let text = wire::bounded_message(error.to_string());
                let headers = headers.get_or_insert_with(HeaderMap::new);
                headers.insert(wire::HEADER_ERROR, wire::header_safe(&text).as_str());
                headers.insert(wire::HEADER_ERROR_CODE, code.as_u16().to_string().as_str());
                wire::encode_error(code, &text)
            }
        };
        let sent = match headers {
            None => self.client.publish(reply.clone(), body).await,
            Some(headers) => {
                self.client
                    .publish_with_headers(reply.clone(), headers, body)
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(plugin = %self.name, error = %e, "reply not sent");
        }
    }

    /// Stops routing to the canary `served` carries, unless a reload replaced it meanwhile;
    /// whether it did.
    fn stop_canary(&self, served: &Arc<Served>) -> bool {
        let mut dropped = false;
        self.served.rcu(|current| {
            dropped = Arc::ptr_eq(current, served);
            if dropped {
                Arc::new(current.alone())
            } else {
                current.clone()
            }
        });
        dropped
    }

    /// Announces the canary of `served`, dropped for `reason`, as a `rolled_back` reload event.
    async fn announce_dropped(&self, served: &Served, reason: String) {
        let canary = served
            .canary
            .as_ref()
            .and_then(|(c, _)| c.revision.as_ref());
        tracing::warn!(
            plugin = %self.name,
            canary = canary.map(|r| r.number),
            "canary dropped: {reason}"
        );
        let stable = served.revision.as_ref();
        let mut event = ReloadEvent::new(
            ReloadStatus::RolledBack,
            &self.name,
            &self.worker_id,
            stable.map_or(0, |r| r.number),
        );
        event.sha256 = stable.map(|r| r.sha256.clone()).unwrap_or_default();
        event.version = stable.map(|r| r.version.clone());
        event.canary_of = canary.map(|r| r.number);
        event.error = Some(reason);
        super::events::announce(&self.client, &self.reloads, &self.namespace, event).await;
    }

    /// Decodes `payload` and runs it on `served`. A plugin that panics answers 500 (the sandbox
    /// thread, or the admission loop for a native plugin run inline, goes on); an output larger
    /// than the server can carry is a 413. On success: the output and its encoding.
    async fn execute(
        &self,
        served: &Served,
        payload: &[u8],
        context: CallContext,
        span: &RequestSpan,
    ) -> Result<(Value, bytes::Bytes), PluginError> {
        // The phases are timed only for a span that records them: a clock read costs about
        // 1% of a native request.
        let timed = span.is_recording();
        let decoding = timed.then(Instant::now);
        let input = wire::decode(payload).map_err(|e| PluginError::BadInput(e.to_string()))?;
        let executing = timed.then(Instant::now);
        if let (Some(decoding), Some(executing)) = (decoding, executing) {
            span.phase("mofa.decode_us", executing - decoding);
        }
        let output = AssertUnwindSafe(served.plugin.execute_in(input, context))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(PluginError::Failed(format!(
                    "plugin {} panicked: {}",
                    self.name,
                    panic_message(&*panic)
                )))
            });
        if let Some(executing) = executing {
            span.phase("mofa.execute_us", executing.elapsed());
        }
        let output = output?;
        let body = wire::encode(&output);
        if body.len() + HEADROOM > self.max_payload {
            return Err(PluginError::LimitExceeded(format!(
                "plugin {}'s output is {} bytes, over the NATS server's max_payload of {} bytes; return less (or raise max_payload on the server)",
                self.name,
                body.len(),
                self.max_payload
            )));
        }
        Ok((output, body))
    }

    /// Runs one durable job's input on what this endpoint serves now, counted in its stats
    /// and announced by a result event like a request (the event's `request_id` is the job
    /// id). Returns the result and the revision that ran it.
    pub(crate) async fn run_job(
        &self,
        payload: &[u8],
        job: &str,
    ) -> (Result<Value, PluginError>, Option<u64>) {
        let served = self.served();
        let started = Instant::now();
        let meta = RequestMeta::job(job, started);
        let span = RequestSpan::none();
        let result = self.execute(&served, payload, meta.context, &span).await;
        let elapsed = started.elapsed();
        let output = match &result {
            Ok((output, _)) => Ok(output.clone()),
            Err(error) => Err(error.clone()),
        };
        let outcome = Outcome::Ran { result, elapsed };
        self.respond(None, &served, &meta, &span, outcome).await;
        (output, served.revision.as_ref().map(|r| r.number))
    }

    /// Publishes the result event of one execution; `request_id` is the caller's (or a job's)
    /// id, generated when absent.
    async fn publish_event(
        &self,
        request_id: Option<&str>,
        trace_id: Option<String>,
        served: &Served,
        result: Result<Value, PluginError>,
        elapsed: Duration,
    ) {
        let request_id = request_id
            .map(str::to_string)
            .unwrap_or_else(|| nuid::next().as_str().to_string());
        let (ok, code, error_message, output) = match result {
            Ok(output) => (true, None, None, self.include_output.then_some(output)),
            Err(e) => (
                false,
                Some(e.code().as_u16()),
                Some(wire::bounded_message(e.to_string())),
                None,
            ),
        };
        let event = ResultEvent {
            event: "result".into(),
            plugin: self.name.as_str().into(),
            kind: served.plugin.kind().as_str().into(),
            revision: served.revision.as_ref().map(|r| r.number),
            canary: served.is_canary,
            worker: (*self.worker_id).into(),
            request_id,
            trace_id,
            ok,
            code,
            message: error_message,
            duration_us: elapsed.as_micros() as u64,
            timestamp_ms: wire::unix_ms(),
            output,
        };
        super::events::publish_result(&self.client, &self.event_subject, event, self.max_payload)
            .await;
    }
}
