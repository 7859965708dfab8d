//! Waiting for the signal to stop: SIGTERM or SIGINT (Ctrl-C). The first one starts an orderly
//! stop; a second one ends the process at once (exit status 130), whatever is still running.

/// Resolves when the process receives SIGTERM or SIGINT; from then on, another one exits the
/// process at once.
pub async fn signal() {
    received().await;
    tokio::spawn(async {
        received().await;
        tracing::warn!("second signal: exiting at once");
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
}

async fn received() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
