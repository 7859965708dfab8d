//! The sandbox pool: a fixed set of threads that run sandboxed plugin calls (Rhai, WASM).
//!
//! Sandboxed code is CPU-bound and bounded by its own deadline, so it runs off the async
//! threads. A fixed pool sized to the machine (rather than tokio's elastic blocking pool, which
//! grows a thread per concurrent call) keeps hundreds of concurrent requests from turning into
//! hundreds of threads fighting for two cores; under load the threads take the next job without
//! parking. A job whose caller has already given up (deadline passed while queued) is skipped.
//! Nested calls (a sandboxed plugin calling another one) run inline on the calling pool thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::PluginError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// What the pool's threads' names start with (`mofa-sandbox-0`, …, `mofa-sandbox-stand-in`),
/// so `ps -L`, `perf` and the benchmarks can tell sandboxed work from the async side's.
pub const THREAD_NAME_PREFIX: &str = "mofa-sandbox";

/// Extra time [`SandboxPool::run_until`] waits beyond a deadline before answering itself.
const DEADLINE_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

thread_local! {
    /// Set on pool threads.
    static ON_POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A fixed pool of threads for sandboxed calls.
#[derive(Debug)]
pub struct SandboxPool {
    jobs: Sender<Job>,
    /// Requests made by plugins (a call depth above 0): taken before new requests, because
    /// the plugins waiting for them hold pool threads.
    nested: Sender<Job>,
    nested_rx: Receiver<Job>,
    threads: usize,
    stand_ins: Arc<StandIns>,
}

/// Pool threads blocked waiting for another plugin's answer, and the threads started to stand
/// in for them. A script waiting on the bus holds its pool thread; if every thread waited, the
/// requests that would answer them (on this worker: the other half of two plugins calling each
/// other across workers, or the next level of a deep chain) would sit in the queue until every
/// deadline passed. So while a thread waits, a stand-in takes nested requests (never new ones,
/// which would only wait in turn) in its place, and leaves once fewer threads wait than
/// stand-ins run.
#[derive(Debug, Default)]
struct StandIns {
    waiting: AtomicUsize,
    running: AtomicUsize,
}

/// Most stand-ins at once, per configured thread: one per level of a call chain.
const STAND_INS_PER_THREAD: usize = super::MAX_CALL_DEPTH as usize;

/// How long an idle pool thread keeps looking for work before it sleeps. Under load the next
/// job usually arrives within this window, which saves a sleep and a wake-up (two context
/// switches) per request.
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The next job, nested calls first; `None` when the pool is dropped. One idle thread at a
/// time spins (`spinning` counts it); the others sleep at once: a second spinner would only
/// burn a core the server and the other threads need, since one spinner already catches the
/// next job.
fn next_job(nested: &Receiver<Job>, fresh: &Receiver<Job>, spinning: &AtomicUsize) -> Option<Job> {
    let try_both = || match nested.try_recv() {
        Ok(job) => Ok(job),
        Err(_) => fresh.try_recv(),
    };
    match try_both() {
        Ok(job) => return Some(job),
        Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
        Err(crossbeam_channel::TryRecvError::Empty) => {}
    }
    if spinning
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let started = std::time::Instant::now();
        let found = loop {
            match try_both() {
                Ok(job) => break Some(Some(job)),
                Err(crossbeam_channel::TryRecvError::Disconnected) => break Some(None),
                Err(crossbeam_channel::TryRecvError::Empty) if started.elapsed() < IDLE_SPIN => {
                    thread::yield_now();
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break None,
            }
        };
        spinning.store(0, Ordering::Release);
        if let Some(job) = found {
            return job;
        }
    }
    crossbeam_channel::select! {
        recv(nested) -> job => job.ok(),
        recv(fresh) -> job => job.ok(),
    }
}

impl SandboxPool {
    /// A pool of `threads` threads; `0` means twice the available cores, at least four.
    pub fn new(threads: usize) -> Arc<Self> {
        let threads = if threads == 0 {
            Self::default_threads()
        } else {
            threads
        };
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let (nested, nested_rx) = crossbeam_channel::unbounded::<Job>();
        let spinning = Arc::new(AtomicUsize::new(0));
        for i in 0..threads {
            let (rx, nested_rx) = (rx.clone(), nested_rx.clone());
            let spinning = spinning.clone();
            let spawned = thread::Builder::new()
                .name(format!("{THREAD_NAME_PREFIX}-{i}"))
                .stack_size(8 << 20)
                .spawn(move || {
                    ON_POOL_THREAD.with(|on| on.set(true));
                    while let Some(job) = next_job(&nested_rx, &rx, &spinning) {
                        run_job(job);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start sandbox thread");
            }
        }
        Arc::new(Self {
            jobs,
            nested,
            nested_rx,
            threads,
            stand_ins: Arc::default(),
        })
    }

    /// Drives `call` (a plugin's call to another plugin) to completion on this thread, like
    /// [`block_on`]; on a pool thread, once the call has to wait, a stand-in thread takes jobs
    /// until it answers (see [`StandIns`]).
    pub(crate) fn wait_for_call<F: std::future::Future>(&self, call: F) -> F::Output {
        if !ON_POOL_THREAD.with(|on| on.get()) {
            return block_on(call);
        }
        let mut counted = false;
        let output = drive(call, || {
            counted = true;
            self.stand_in();
        });
        if counted {
            self.stand_ins.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        output
    }

    /// Counts this thread as waiting and starts a stand-in if fewer run than threads wait.
    fn stand_in(&self) {
        let waiting = self.stand_ins.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let most = self.threads * STAND_INS_PER_THREAD;
        let running = &self.stand_ins.running;
        let mut now = running.load(Ordering::Acquire);
        while now < waiting && now < most {
            match running.compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let (rx, stand_ins) = (self.nested_rx.clone(), self.stand_ins.clone());
                    let spawned = thread::Builder::new()
                        .name(format!("{THREAD_NAME_PREFIX}-stand-in"))
                        .stack_size(8 << 20)
                        .spawn(move || stand_in_loop(&rx, &stand_ins));
                    if let Err(e) = spawned {
                        running.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(error = %e, "cannot start a stand-in sandbox thread");
                    }
                    return;
                }
                Err(current) => now = current,
            }
        }
    }

    /// Whether this thread is one of the pool's (or a stand-in).
    pub fn on_pool_thread() -> bool {
        ON_POOL_THREAD.with(|on| on.get())
    }

    /// Stand-in threads running now.
    pub fn stand_ins(&self) -> usize {
        self.stand_ins.running.load(Ordering::Acquire)
    }

    /// Twice the available cores, at least four.
    pub fn default_threads() -> usize {
        thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(4)
            .max(4)
    }

    /// Jobs waiting for a thread now.
    pub fn queued(&self) -> usize {
        self.jobs.len() + self.nested.len()
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a pool thread, without waiting for it.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PluginError> {
        self.jobs
            .send(Box::new(job))
            .map_err(|_| PluginError::Failed("sandbox pool is shut down".to_string()))
    }

    /// Runs `job`, a request made by another plugin, on a pool thread before any new request
    /// (see [`StandIns`]), without waiting for it.
    pub fn spawn_nested(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PluginError> {
        self.nested
            .send(Box::new(job))
            .map_err(|_| PluginError::Failed("sandbox pool is shut down".to_string()))
    }

    /// Runs `f` like [`SandboxPool::run`], answering `late()` if no result arrives by `deadline`
    /// plus a short grace period (the call itself stops at its deadline from inside; this bounds
    /// the wait even when every pool thread is busy).
    pub async fn run_until<T, F>(
        &self,
        deadline: std::time::Instant,
        f: F,
        late: impl FnOnce() -> PluginError,
    ) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, PluginError> + Send + 'static,
    {
        let wait = deadline.saturating_duration_since(std::time::Instant::now()) + DEADLINE_GRACE;
        tokio::time::timeout(wait, self.run(f))
            .await
            .unwrap_or_else(|_| Err(late()))
    }

    /// Runs `f` on a pool thread and returns its result. Called from a pool thread (a
    /// sandboxed plugin calling another plugin), `f` runs right there: a chain of nested calls
    /// must not wait for free threads its own callers are holding.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, PluginError> + Send + 'static,
    {
        if ON_POOL_THREAD.with(|on| on.get()) {
            return f();
        }
        // The caller's trace (a request's span, or its unsampled context) goes on while `f`
        // runs, so the calls `f` makes continue it, as they would inline.
        let trace = crate::telemetry::CurrentTrace::capture();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return; // the caller gave up while the job was queued
            }
            let result = trace.run(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
                    Err(PluginError::Failed(format!(
                        "sandboxed call panicked: {}",
                        panic_message(&*panic)
                    )))
                })
            });
            let _ = tx.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| PluginError::Failed("sandbox pool is shut down".to_string()))?;
        rx.await
            .map_err(|_| PluginError::Failed("sandboxed call was dropped".to_string()))?
    }
}

/// Runs one job; a job that panics is logged and the thread lives on, so the pool keeps its
/// strength. (Jobs answer their own callers: a request's job catches its plugin's panic and
/// replies 500 before this point.)
fn run_job(job: Job) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        tracing::error!(panic = %panic_message(&*panic), "a sandbox job panicked; the thread goes on");
    }
}

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// A stand-in's life: take nested requests while more threads wait than stand-ins run.
fn stand_in_loop(rx: &Receiver<Job>, stand_ins: &StandIns) {
    ON_POOL_THREAD.with(|on| on.set(true));
    loop {
        let running = stand_ins.running.load(Ordering::Acquire);
        if running > stand_ins.waiting.load(Ordering::Acquire) {
            if stand_ins
                .running
                .compare_exchange(running, running - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            continue;
        }
        match rx.recv_timeout(std::time::Duration::from_millis(20)) {
            Ok(job) => run_job(job),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                stand_ins.running.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }
}

/// Wakes a thread parked in [`block_on`].
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` to completion on this (pool) thread, parking while it waits; tokio's own
/// threads drive I/O and timers (enter the runtime's context first). Unlike
/// `Handle::block_on` it may nest: a sandboxed plugin calling another runs the nested call on
/// the same thread.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    drive(future, || {})
}

/// [`block_on`], calling `first_wait` once, the first time `future` has to wait.
fn drive<F: std::future::Future>(future: F, first_wait: impl FnOnce()) -> F::Output {
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let mut first_wait = Some(first_wait);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        if let Some(first_wait) = first_wait.take() {
            first_wait();
        }
        thread::park();
    }
}
