//! A plugin's call to another plugin from a sandbox thread (`call_plugin` in WASM and Rhai):
//! one level deeper, under the caller's remaining deadline, waiting without starving the pool.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{CallContext, PluginCaller, PluginError, SandboxPool, Value, MAX_CALL_DEPTH};

/// Calls `name` from a plugin running `depth` calls deep with `deadline`. `input` is made only
/// once the depth and the deadline allow the call.
pub(crate) fn call_nested(
    pool: &SandboxPool,
    caller: &dyn PluginCaller,
    runtime: &tokio::runtime::Handle,
    name: &str,
    input: impl FnOnce() -> Result<Value, PluginError>,
    depth: u32,
    deadline: Instant,
) -> Result<Value, PluginError> {
    let depth = depth + 1;
    if depth > MAX_CALL_DEPTH {
        return Err(PluginError::LimitExceeded(format!(
            "call_plugin({name}): call depth limit of {MAX_CALL_DEPTH} reached (plugins calling each other in a loop?)"
        )));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(PluginError::Timeout(format!(
            "call_plugin({name}): the caller's deadline has passed"
        )));
    }
    let input = input()?;
    let _runtime = runtime.enter();
    let call = caller.call(
        name,
        input,
        CallContext {
            depth,
            deadline: Some(deadline),
            admitted: None,
        },
    );
    // A local callee usually answers within the first poll: only a call that has to wait
    // pays for a timer and a waker.
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(answer) = call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return answer;
    }
    pool.wait_for_call(tokio::time::timeout(remaining, call))
        .unwrap_or_else(|_| {
            Err(PluginError::Timeout(format!(
                "call_plugin({name}): no answer before the caller's deadline"
            )))
        })
}
