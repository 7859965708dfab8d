//! Whether a sandboxed plugin's calls start where the request arrived.
//!
//! Handing a call to a sandbox thread and its answer back costs two thread wake-ups, more than
//! a short script or module takes to run. So a sandboxed plugin first tries a call on the
//! calling thread, bounded (a short time or fuel budget, and nothing done that anyone else
//! could see), and runs it again from the start on the pool when the attempt had to stop
//! (see `ScriptEngine::try_inline` and `WasmRuntime::try_inline`). A plugin whose attempt had
//! to stop sends its calls straight to the pool for [`INLINE_BACKOFF`], so a long or busy
//! plugin wastes an attempt once in a while, not on every call.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a plugin's calls go straight to the pool after an attempt had to stop, or most of
/// its recent inline calls were longer than [`SHORT_CALL`].
pub const INLINE_BACKOFF: Duration = Duration::from_secs(1);

/// The longest call that keeps its plugin's calls inline. Calls that run inline run one after
/// another on the thread that admits the plugin's requests, so longer ones do better spread
/// over the sandbox pool's threads.
pub const SHORT_CALL: Duration = Duration::from_micros(50);

/// Of the last 16 inline calls, how many may be longer than [`SHORT_CALL`] (a first call that
/// warms caches, a preempted one) before the gate closes.
const LONG_CALLS_ALLOWED: u32 = 8;

/// Open (calls start inline) unless an attempt had to stop within the last [`INLINE_BACKOFF`].
#[derive(Debug, Default)]
pub struct InlineGate {
    /// Nanoseconds after [`epoch`] until which calls go to the pool at once.
    closed_until: AtomicU64,
    /// The last 16 inline calls, newest in the lowest bit: 1 = longer than [`SHORT_CALL`].
    recent: AtomicU32,
}

/// The instant the gates count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl InlineGate {
    /// Whether a call may start inline now.
    pub fn open(&self) -> bool {
        epoch().elapsed().as_nanos() as u64 >= self.closed_until.load(Ordering::Relaxed)
    }

    /// An inline call finished after `took`. Once more than [`LONG_CALLS_ALLOWED`] of the last
    /// 16 were longer than [`SHORT_CALL`], the next calls go to the pool for
    /// [`INLINE_BACKOFF`]. (Updated without a lock: two calls finishing at once may drop one
    /// bit, which only delays the decision by a call.)
    pub fn finished(&self, took: Duration) {
        let recent =
            (self.recent.load(Ordering::Relaxed) << 1 | u32::from(took > SHORT_CALL)) & 0xffff;
        self.recent.store(recent, Ordering::Relaxed);
        if recent.count_ones() > LONG_CALLS_ALLOWED {
            self.recent.store(0, Ordering::Relaxed);
            self.close();
        }
    }

    /// An attempt had to stop: the next calls go to the pool for [`INLINE_BACKOFF`].
    pub fn close(&self) {
        let until = (epoch().elapsed() + INLINE_BACKOFF).as_nanos() as u64;
        self.closed_until.store(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_starts_open_and_closes_for_the_backoff() {
        let gate = InlineGate::default();
        assert!(gate.open());
        gate.finished(SHORT_CALL * 100);
        for _ in 0..100 {
            gate.finished(SHORT_CALL);
        }
        assert!(gate.open(), "short calls, and one long one, keep it open");
        for _ in 0..LONG_CALLS_ALLOWED {
            gate.finished(SHORT_CALL * 2);
        }
        assert!(gate.open(), "half of the last 16 long: still open");
        gate.finished(SHORT_CALL * 2);
        assert!(!gate.open(), "most of the last 16 long: closed");
        gate.closed_until.store(0, Ordering::Relaxed);
        gate.close();
        assert!(!gate.open());
        gate.closed_until.store(0, Ordering::Relaxed);
        assert!(gate.open());
    }
}
