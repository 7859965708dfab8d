//! Whether a sandboxed plugin's calls start where the request arrived.
//!
//! Handing a call to a sandbox thread and its answer back costs two thread wake-ups, more than
//! a short script or module takes to run. So a sandboxed plugin first tries a call on the
//! calling thread, bounded (a short time or fuel budget, and nothing done that anyone else
//! could see), and runs it again from the start on the pool when the attempt had to stop
//! (see `ScriptEngine::try_inline` and `WasmRuntime::try_inline`). A plugin whose attempt had
//! to stop, or whose recent inline calls were mostly long, sends its calls straight to the
//! pool for [`INLINE_BACKOFF`], so a long or busy plugin wastes an attempt once in a while,
//! not on every call.
//!
//! Whether a call was long is judged first by the work the plugin's own counter measured
//! (a WASM module's fuel, a Rhai script's operations), which is the same on every run, and only
//! then by wall time, with a bound far above a short call. Wall time alone misjudges on a busy host: a 5 µs call whose
//! thread is preempted, or whose memory pages fault in, takes 50–300 µs now and then, and
//! under load often enough to close the gate, which sends the calls to the pool, which makes
//! the host busier still.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{PluginError, Value};

/// How long a plugin's calls go straight to the pool after an attempt had to stop, or most of
/// its recent inline calls were long.
pub const INLINE_BACKOFF: Duration = Duration::from_secs(1);

/// The wall time past which an inline call counts as long whatever its work counter says:
/// work no counter sees (a host function such as a regex match, a bulk memory fill) still
/// holds up the thread that admits the plugin's requests. Far above a short call (1–10 µs)
/// and above most preemptions on a busy host.
pub const LONG_CALL: Duration = Duration::from_millis(1);

/// Of the last 16 inline calls, how many may be long (a first call that warms caches, a
/// preempted one) before the gate closes.
const LONG_CALLS_ALLOWED: u32 = 8;

/// An inline attempt that ran to its end.
#[derive(Debug)]
pub struct InlineCall {
    /// What the call answered.
    pub result: Result<Value, PluginError>,
    /// The plugin's work counter found the call long (see [`InlineGate::finished`]).
    pub worked_long: bool,
}

/// Open (calls start inline) unless an attempt had to stop within the last [`INLINE_BACKOFF`].
#[derive(Debug, Default)]
pub struct InlineGate {
    /// Nanoseconds after [`epoch`] until which calls go to the pool at once.
    closed_until: AtomicU64,
    /// The last 16 inline calls, newest in the lowest bit: 1 = long.
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

    /// An inline call finished after `took` of wall time; `worked_long` says whether the
    /// plugin's own work counter found it long. It counts as long for either, or for `took`
    /// over [`LONG_CALL`]. Once more than [`LONG_CALLS_ALLOWED`] of the last 16 were long, the
    /// next calls go to the pool for [`INLINE_BACKOFF`]. (Updated without a lock: two calls
    /// finishing at once may drop one bit, which only delays the decision by a call.)
    pub fn finished(&self, took: Duration, worked_long: bool) {
        let long = worked_long || took > LONG_CALL;
        let recent = (self.recent.load(Ordering::Relaxed) << 1 | u32::from(long)) & 0xffff;
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
    fn a_gate_closes_when_most_recent_calls_worked_long_or_ran_past_long_call() {
        let short = Duration::from_micros(5);
        let gate = InlineGate::default();
        assert!(gate.open());
        gate.finished(short, true);
        gate.finished(LONG_CALL * 100, false);
        for _ in 0..100 {
            gate.finished(short, false);
        }
        assert!(gate.open(), "short calls, and two long ones, keep it open");
        // Slow on the clock but short in work (a preempted call): not long.
        for _ in 0..100 {
            gate.finished(LONG_CALL / 2, false);
        }
        assert!(
            gate.open(),
            "calls under LONG_CALL that did little work keep it open"
        );
        for _ in 0..LONG_CALLS_ALLOWED {
            gate.finished(short, true);
        }
        assert!(gate.open(), "half of the last 16 long: still open");
        gate.finished(short, true);
        assert!(!gate.open(), "most of the last 16 worked long: closed");

        let gate = InlineGate::default();
        for _ in 0..=LONG_CALLS_ALLOWED {
            gate.finished(LONG_CALL * 2, false);
        }
        assert!(
            !gate.open(),
            "most of the last 16 ran past LONG_CALL: closed"
        );
        gate.closed_until.store(0, Ordering::Relaxed);
        gate.close();
        assert!(!gate.open());
        gate.closed_until.store(0, Ordering::Relaxed);
        assert!(gate.open());
    }
}
