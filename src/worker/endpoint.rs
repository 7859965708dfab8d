//! One plugin served on the bus: subscription, admission, execution, reply, result event.
//!
//! The subscription is read by one task that admits: it takes a concurrency permit and starts
//! the request (finishing it on the spot if it never has to wait, spawning it otherwise), or,
//! when the plugin is saturated, answers 503 at once. Nothing queues
//! without bound. The permit is released before the reply is published, so a client keeping
//! exactly `max_concurrency` requests in flight is never refused.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::{Client, HeaderMap, Message, Subject, Subscriber};
use futures::StreamExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::distribution::Revision;
use crate::plugin::{block_on, CallContext, ManagedPlugin, PluginError, SandboxPool};
use crate::subjects;
use crate::wire::{self, ErrorCode, ResultEvent, Value};

/// Counters for the Services API `STATS` reply. Updated with atomics; the last error takes a
/// lock only when there is an error.
#[derive(Debug, Default)]
pub struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    last_error: Mutex<Option<(u16, String)>>,
}

impl EndpointStats {
    fn record(&self, elapsed: Duration, error: Option<(ErrorCode, &str)>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if let Some((code, message)) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((code.as_u16(), message.to_string()));
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
}

impl Served {
    pub(crate) fn new(plugin: Arc<ManagedPlugin>, revision: Option<Revision>) -> Self {
        let revision_header = revision.as_ref().map(|r| r.number.to_string());
        Self {
            plugin,
            revision,
            revision_header,
        }
    }
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
    pool: Arc<SandboxPool>,
    runtime: tokio::runtime::Handle,
    event_subject: Subject,
    worker_id: Arc<str>,
    events: bool,
    include_output: bool,
}

impl Endpoint {
    pub(crate) fn new(
        served: Served,
        client: Client,
        config: &crate::config::WorkerConfig,
        worker_id: Arc<str>,
        pool: Arc<SandboxPool>,
    ) -> Self {
        let name = served.plugin.id().to_string();
        Self {
            subject: subjects::exec(&name),
            event_subject: Subject::from(subjects::result_event(&name)),
            name,
            served: ArcSwap::from_pointee(served),
            stats: Arc::new(EndpointStats::default()),
            client,
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            limit: config.max_concurrency,
            pool,
            runtime: tokio::runtime::Handle::current(),
            worker_id,
            events: config.events.results,
            include_output: config.events.include_output,
        }
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
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = removed.wait_for(|stop| *stop) => break,
                message = requests.next() => match message {
                    Some(message) => self.admit(message, &tracker),
                    None => return,
                },
            }
        }
        if let Err(e) = requests.drain().await {
            tracing::warn!(plugin = %self.name, error = %e, "drain failed");
            return;
        }
        while let Some(message) = requests.next().await {
            self.admit(message, &tracker);
        }
        tracing::debug!(plugin = %self.name, "endpoint drained");
    }

    fn admit(self: &Arc<Self>, message: Message, tracker: &TaskTracker) {
        let endpoint = self.clone();
        // The deadline counts from here: time spent queued for a sandbox thread is part of it.
        let context = call_context(&message, Instant::now());
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) if crate::kinds::is_sandboxed(self.served().plugin.kind()) => {
                // Sandboxed plugins run on a sandbox thread anyway: handle the whole request
                // there (execute, reply, event) instead of hopping back to an async thread.
                let request =
                    tracker.track_future(endpoint.clone().handle(message, permit, context));
                let runtime = self.runtime.clone();
                let job = move || {
                    let _context = runtime.enter();
                    block_on(request);
                };
                // A request from another plugin goes first: that plugin holds a thread while it
                // waits (see `SandboxPool::wait_for_call`).
                let queued = if context.depth > 0 {
                    self.pool.spawn_nested(job)
                } else {
                    self.pool.spawn(job)
                };
                if let Err(e) = queued {
                    tracing::error!(plugin = %endpoint.name, error = %e, "request dropped");
                }
            }
            Ok(permit) => {
                // Most native plugins finish without ever waiting: poll the request once here and
                // only pay for a task when it has to wait (I/O, backpressure).
                let mut request = Box::pin(endpoint.handle(message, permit, context));
                let mut cx = Context::from_waker(Waker::noop());
                if request.as_mut().poll(&mut cx).is_pending() {
                    tracker.spawn(request);
                }
            }
            Err(_) => {
                tracker.spawn(async move {
                    let error = PluginError::Unavailable(format!(
                        "plugin {} is saturated: {} requests already in flight on this worker",
                        endpoint.name, endpoint.limit
                    ));
                    let served = endpoint.served();
                    endpoint.reply_error(&message, &error, &served).await;
                    let message = error.to_string();
                    endpoint
                        .stats
                        .record(Duration::ZERO, Some((error.code(), &message)));
                });
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        message: Message,
        permit: OwnedSemaphorePermit,
        context: CallContext,
    ) {
        let started = Instant::now();
        let served = self.served();
        let result = match wire::decode(&message.payload) {
            Ok(input) => served.plugin.execute_in(input, context).await,
            Err(e) => Err(PluginError::BadInput(e.to_string())),
        };
        drop(permit);
        let elapsed = started.elapsed();
        match &result {
            Ok(output) => {
                if let Some(reply) = &message.reply {
                    let body = wire::encode(output);
                    let sent = match &served.revision_header {
                        None => self.client.publish(reply.clone(), body).await,
                        Some(revision) => {
                            let mut headers = HeaderMap::new();
                            headers.insert(wire::HEADER_REVISION, revision.as_str());
                            self.client
                                .publish_with_headers(reply.clone(), headers, body)
                                .await
                        }
                    };
                    if let Err(e) = sent {
                        tracing::warn!(plugin = %self.name, error = %e, "reply not sent");
                    }
                }
                self.stats.record(elapsed, None);
            }
            Err(error) => {
                self.reply_error(&message, error, &served).await;
                let text = error.to_string();
                self.stats.record(elapsed, Some((error.code(), &text)));
            }
        }
        if self.events {
            self.publish_event(&message, &served, result, elapsed).await;
        }
    }

    async fn reply_error(&self, message: &Message, error: &PluginError, served: &Served) {
        let Some(reply) = &message.reply else {
            return;
        };
        let code = error.code();
        let text = error.to_string();
        let mut headers = HeaderMap::new();
        if let Some(revision) = &served.revision_header {
            headers.insert(wire::HEADER_REVISION, revision.as_str());
        }
        headers.insert(wire::HEADER_ERROR, header_safe(&text).as_str());
        headers.insert(wire::HEADER_ERROR_CODE, code.as_u16().to_string().as_str());
        let body = wire::encode_error(code, &text);
        if let Err(e) = self
            .client
            .publish_with_headers(reply.clone(), headers, body)
            .await
        {
            tracing::warn!(plugin = %self.name, error = %e, "error reply not sent");
        }
    }

    async fn publish_event(
        &self,
        message: &Message,
        served: &Served,
        result: Result<Value, PluginError>,
        elapsed: Duration,
    ) {
        let request_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::HEADER_REQUEST_ID))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| nuid::next().as_str().to_string());
        let (ok, code, error_message, output) = match result {
            Ok(output) => (true, None, None, self.include_output.then_some(output)),
            Err(e) => (false, Some(e.code().as_u16()), Some(e.to_string()), None),
        };
        let event = ResultEvent {
            event: "result".into(),
            plugin: self.name.as_str().into(),
            kind: served.plugin.kind().as_str().into(),
            revision: served.revision.as_ref().map(|r| r.number),
            worker: (*self.worker_id).into(),
            request_id,
            ok,
            code,
            message: error_message,
            duration_us: elapsed.as_micros() as u64,
            timestamp_ms: wire::unix_ms(),
            output,
        };
        match wire::encode_named(&event) {
            Ok(body) => {
                if let Err(e) = self.client.publish(self.event_subject.clone(), body).await {
                    tracing::warn!(plugin = %self.name, error = %e, "result event not sent");
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %self.name, error = %e, "result event not encoded")
            }
        }
    }
}

/// The call context a request carries: its depth when another plugin made it.
fn call_context(message: &Message, admitted: Instant) -> CallContext {
    let depth = message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_CALL_DEPTH))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0);
    CallContext {
        depth,
        deadline: None,
        admitted: Some(admitted),
    }
}

/// Header values cannot hold line breaks; keep the message on one line.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}
