//! Metrics over OTLP: per plugin, requests and errors (by code), refusals, a duration
//! histogram, requests in flight and queued, the sandbox pool's queue, and reload outcomes.
//!
//! Counts the worker already keeps for `$SRV.STATS` are read by observable instruments when
//! the periodic reader collects (no per-request cost); only the duration histogram records
//! per request, and only while a meter provider exports ([`Instruments::record`] is one relaxed
//! load otherwise).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter};
use opentelemetry::KeyValue;

static RECORDING: AtomicBool = AtomicBool::new(false);

/// Marks that a meter provider exports, so the histogram records.
pub(super) fn start_recording() {
    RECORDING.store(true, Ordering::Relaxed);
}

/// How a published revision ended on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// It serves.
    Completed,
    /// It was rejected (compile, load or signature error).
    Failed,
    /// It was rejected and the previous revision kept serving.
    RolledBack,
}

impl ReloadOutcome {
    /// Every outcome, in the order [`ReloadCounts::of`] counts them.
    pub const ALL: [ReloadOutcome; 3] = [Self::Completed, Self::Failed, Self::RolledBack];

    /// The name in events, metrics and `$SRV.STATS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// Reload outcomes per plugin on this worker since it started.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    counts: Mutex<BTreeMap<String, [u64; 3]>>,
}

impl ReloadCounts {
    /// Counts one outcome for `plugin`.
    pub fn record(&self, plugin: &str, outcome: ReloadOutcome) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match counts.get_mut(plugin) {
            Some(slot) => slot,
            None => counts.entry(plugin.to_string()).or_default(),
        };
        slot[outcome as usize] += 1;
    }

    /// `plugin`'s counts: completed, failed, rolled back.
    pub fn of(&self, plugin: &str) -> [u64; 3] {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(plugin).copied().unwrap_or_default()
    }

    /// Every plugin's counts.
    pub fn all(&self) -> Vec<(String, [u64; 3])> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// One plugin's counts at collection time.
#[derive(Debug, Clone, Default)]
pub struct PluginSnapshot {
    /// Plugin name.
    pub plugin: String,
    /// Requests answered.
    pub requests: u64,
    /// Error replies per code.
    pub errors: Vec<(u16, u64)>,
    /// Requests answered 503 without running.
    pub refused: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
}

/// What the observable instruments read when the reader collects.
pub struct Sources {
    /// The served plugins' counts.
    pub plugins: Box<dyn Fn() -> Vec<PluginSnapshot> + Send + Sync>,
    /// Jobs waiting for a sandbox thread.
    pub sandbox_queue: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Reload outcomes.
    pub reloads: Arc<ReloadCounts>,
}

/// The instrument the request path records into.
pub struct Instruments {
    duration: Histogram<f64>,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments").finish_non_exhaustive()
    }
}

/// The attribute naming a plugin, built once per endpoint (cloning it shares the name).
pub fn plugin_attribute(plugin: &str) -> KeyValue {
    KeyValue::new("mofa.plugin", Arc::<str>::from(plugin))
}

impl Instruments {
    /// The request-duration histogram on the global meter provider (a no-op one when metrics
    /// are not exported).
    pub fn new() -> Instruments {
        let meter = opentelemetry::global::meter("mofa-bus");
        Instruments {
            duration: meter
                .f64_histogram("mofa.request.duration")
                .with_unit("s")
                .with_description(
                    "Time from a request's start to its reply, per plugin and outcome",
                )
                .with_boundaries(vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
        }
    }

    /// Records one request's duration; `code` is its error code, `None` on success.
    #[inline]
    pub fn record(&self, plugin: &KeyValue, code: Option<u16>, took: Duration) {
        if RECORDING.load(Ordering::Relaxed) {
            self.record_exported(plugin, code, took);
        }
    }

    #[inline(never)]
    fn record_exported(&self, plugin: &KeyValue, code: Option<u16>, took: Duration) {
        let outcome = match code {
            None => KeyValue::new("error.type", "none"),
            Some(code) => KeyValue::new("error.type", code.to_string()),
        };
        self.duration
            .record(took.as_secs_f64(), &[plugin.clone(), outcome]);
    }
}

impl Default for Instruments {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers the observable instruments of worker `worker` on the global meter provider,
/// reading `sources` at each collection. They stay registered for the life of the provider
/// (the process): `sources` should hold the worker weakly and report nothing once it is gone.
pub fn observe(worker: &str, sources: Sources) {
    let meter = opentelemetry::global::meter("mofa-bus");
    let worker = KeyValue::new("mofa.worker", Arc::<str>::from(worker));
    register(&meter, &worker, &Arc::new(sources));
}

/// A callback observing `read` of every served plugin.
fn per_plugin(
    worker: &KeyValue,
    sources: &Arc<Sources>,
    read: fn(&PluginSnapshot) -> u64,
) -> impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static {
    let (s, w) = (sources.clone(), worker.clone());
    move |observer| {
        for p in (s.plugins)() {
            observer.observe(read(&p), &[w.clone(), plugin_attribute(&p.plugin)]);
        }
    }
}

fn register(meter: &Meter, worker: &KeyValue, sources: &Arc<Sources>) {
    meter
        .u64_observable_counter("mofa.requests")
        .with_description("Requests answered, per plugin (errors included)")
        .with_callback(per_plugin(worker, sources, |p| p.requests))
        .build();
    meter
        .u64_observable_counter("mofa.refused")
        .with_description("Requests answered 503 without running (queue full or wait too long)")
        .with_callback(per_plugin(worker, sources, |p| p.refused))
        .build();
    meter
        .u64_observable_gauge("mofa.in_flight")
        .with_description("Requests running now, per plugin")
        .with_callback(per_plugin(worker, sources, |p| p.in_flight))
        .build();
    meter
        .u64_observable_gauge("mofa.queued")
        .with_description("Requests waiting for a slot now, per plugin (max_queue)")
        .with_callback(per_plugin(worker, sources, |p| p.queued))
        .build();
    let (s, w) = (sources.clone(), worker.clone());
    meter
        .u64_observable_counter("mofa.errors")
        .with_description("Error replies, per plugin and code (error.type)")
        .with_callback(move |observer| {
            for p in (s.plugins)() {
                for (code, count) in &p.errors {
                    observer.observe(
                        *count,
                        &[
                            w.clone(),
                            plugin_attribute(&p.plugin),
                            KeyValue::new("error.type", code.to_string()),
                        ],
                    );
                }
            }
        })
        .build();
    let (s, w) = (sources.clone(), worker.clone());
    meter
        .u64_observable_gauge("mofa.sandbox.queue")
        .with_description("Rhai and WASM calls waiting for a sandbox thread")
        .with_callback(move |observer| {
            observer.observe((s.sandbox_queue)(), std::slice::from_ref(&w))
        })
        .build();
    let (s, w) = (sources.clone(), worker.clone());
    meter
        .u64_observable_counter("mofa.reloads")
        .with_description(
            "Reload outcomes per plugin (mofa.outcome: completed, failed, rolled_back)",
        )
        .with_callback(move |observer| {
            for (plugin, counts) in s.reloads.all() {
                for outcome in ReloadOutcome::ALL {
                    observer.observe(
                        counts[outcome as usize],
                        &[
                            w.clone(),
                            plugin_attribute(&plugin),
                            KeyValue::new("mofa.outcome", outcome.as_str()),
                        ],
                    );
                }
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_outcomes_count_per_plugin() {
        let counts = ReloadCounts::default();
        counts.record("a", ReloadOutcome::Completed);
        counts.record("a", ReloadOutcome::Failed);
        counts.record("a", ReloadOutcome::RolledBack);
        counts.record("a", ReloadOutcome::Completed);
        assert_eq!(counts.of("a"), [2, 1, 1]);
        assert_eq!(counts.of("b"), [0, 0, 0]);
        assert_eq!(counts.all().len(), 1);
    }
}
