//! The async runtime a worker runs on, sized by `async_threads`.
//!
//! 0 (the default) is tokio's multi-threaded runtime with a thread per core: native plugins
//! and the sandboxed calls that start inline spread over every core. 1 is a current-thread
//! runtime: the NATS connection's task, the endpoints reading their subscriptions, admission,
//! native plugins, inline calls, replies and result events all run on one thread, so a request
//! is read, run and answered without waking another thread. That costs fewer context switches
//! and less CPU per request (`cargo bench --bench bus -- over-the-bus` measures the discount
//! rule both ways, in its rows "…, 1 async thread"), and suits one worker per core or per small
//! container, scaled out in the queue group. Sandboxed calls that move to the sandbox pool use
//! its threads either way.

use tokio::runtime::{Builder, Runtime};

/// The name of a multi-threaded runtime's threads (`ps -L` shows which runtime a worker runs).
pub const MULTI_THREAD_NAME: &str = "mofa-async";

/// The name of the threads a current-thread runtime starts for blocking work (its async side
/// runs on the thread that called [`build`]).
pub const BLOCKING_THREAD_NAME: &str = "mofa-blocking";

/// The runtime for `async_threads`: 0 = one worker thread per core, 1 = current-thread, n =
/// n worker threads.
pub fn build(async_threads: usize) -> std::io::Result<Runtime> {
    let mut builder = match async_threads {
        1 => {
            let mut builder = Builder::new_current_thread();
            builder.thread_name(BLOCKING_THREAD_NAME);
            builder
        }
        n => {
            let mut builder = Builder::new_multi_thread();
            builder.thread_name(MULTI_THREAD_NAME);
            if n > 1 {
                builder.worker_threads(n);
            }
            builder
        }
    };
    builder.enable_all().build()
}
