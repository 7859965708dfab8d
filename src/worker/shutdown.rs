//! Waiting for the signal to stop: SIGTERM or SIGINT (Ctrl-C). The first one starts an orderly
//! stop; a second one ends the process at once (exit status 130), whatever is still running.
//!
//! The handlers are installed by [`Signals::listen`], before the work they stop begins: a
//! signal that arrives while a worker is still starting (or between one signal and the next)
//! is held for [`Signals::first`] instead of killing the process with the default action, which
//! would skip the drain and leave a `--dev` nats-server behind.

/// SIGTERM and SIGINT, listened for from the moment this is made.
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening now. Needs a tokio runtime.
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the process");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves at the first SIGTERM or SIGINT received since [`Signals::listen`]; from then on,
    /// another one exits the process at once (status 130).
    pub async fn first(mut self) {
        self.received().await;
        tokio::spawn(async move {
            self.received().await;
            tracing::warn!("second signal: exiting at once");
            eprintln!("second signal: exiting at once");
            std::process::exit(130);
        });
    }

    async fn received(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves when the process receives SIGTERM or SIGINT, listening from this call on (not from
/// the first poll); from then on, another one exits the process at once.
pub fn signal() -> impl std::future::Future<Output = ()> {
    Signals::listen().first()
}

/// Resolves once `client` is not connected to a server (at once if it is not now): a drain
/// that waits for the server (an unsubscription's confirmation, a flush) stops waiting then,
/// since nothing more can arrive or leave. Polled every 20 ms: async-nats tells of state
/// changes only through the connection's event callback, which logging owns, and this runs
/// only while a worker stops.
pub(crate) async fn disconnected(client: &async_nats::Client) {
    while client.connection_state() == async_nats::connection::State::Connected {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
