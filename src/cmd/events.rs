//! `mofa events`: the fleet's events as JSON lines, until a signal.

use std::process::ExitCode;

use futures::StreamExt;
use mofa_bus::{subjects, wire};

use super::connect::{Nats, NatsArgs};

/// Print events as JSON lines: result events of one plugin, or every event.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa events                             # every event, until Ctrl-C\n  \
    mofa events discount | jq .duration_us")]
pub(crate) struct EventsArgs {
    /// Plugin name; omitted: all plugins and all event kinds (mofa.events.>).
    pub(crate) plugin: Option<String>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl EventsArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        events(&self.nats.resolve(), self.plugin.as_deref()).await
    }
}

/// Prints each event on the plugin's result subject, or every event, as a JSON line.
async fn events(nats: &Nats, plugin: Option<&str>) -> anyhow::Result<ExitCode> {
    let namespace = nats.namespace()?;
    let subject = match plugin {
        Some(p) => {
            subjects::validate_name(p)?;
            namespace.result_event(p)
        }
        None => namespace.events(),
    };
    let client = nats.connect("mofa").await?;
    let mut sub = client.subscribe(subject).await?;
    let mut stdout = std::io::stdout();
    let stop = mofa_bus::worker::shutdown::signal();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => break,
            message = sub.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        match wire::decode(&message.payload) {
            Ok(event) => {
                use std::io::Write;
                // The reader went away (`mofa events | head`): stop quietly.
                if writeln!(stdout, "{}", wire::to_json(&event))
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => eprintln!("warning: undecodable event on {}: {e}", message.subject),
        }
    }
    Ok(ExitCode::SUCCESS)
}
