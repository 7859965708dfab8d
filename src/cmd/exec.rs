//! `mofa exec`: one request, its reply printed as JSON; the exit status says how it went.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mofa_bus::{subjects, wire};

use super::connect::{Nats, NatsArgs};

/// Send one request and print the reply as JSON.
///
/// Exit status: 0 on a reply, 1 on an error reply (code and message on stderr),
/// 2 when no worker serves the plugin, the request times out or NATS is unreachable.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa exec discount '{\"price\": 100, \"customer_tier\": \"gold\"}'   # 80.0\n  \
    mofa exec echo '[1, 2]' --verbose       # trace id, revision and round trip on stderr\n  \
    mofa exec discount '{\"price\": 5}' --route-key customer-42 --timeout 500ms")]
pub(crate) struct ExecArgs {
    /// Plugin name.
    pub(crate) plugin: String,
    /// Input as JSON (converted to MessagePack). Omitted: nil.
    pub(crate) input: Option<String>,
    /// How long to wait for the reply (e.g. 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Print the trace id, the revision that answered and the round-trip time on stderr.
    #[arg(long, short)]
    pub(crate) verbose: bool,
    /// Sent as the Mofa-Route-Key header: while a canary runs, one key always reaches
    /// the same revision.
    #[arg(long)]
    pub(crate) route_key: Option<String>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl ExecArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let options = ExecOptions {
            timeout: self.timeout,
            verbose: self.verbose,
            route_key: self.route_key,
        };
        exec(
            &self.nats.resolve(),
            &self.plugin,
            self.input.as_deref(),
            options,
        )
        .await
    }
}

/// `mofa exec`'s choices beside the plugin and its input.
struct ExecOptions {
    timeout: Duration,
    verbose: bool,
    route_key: Option<String>,
}

/// Sends the request, prints the reply; the exit status says how it went.
async fn exec(
    nats: &Nats,
    plugin: &str,
    input: Option<&str>,
    options: ExecOptions,
) -> anyhow::Result<ExitCode> {
    use tracing::Instrument;
    subjects::validate_name(plugin)?;
    let value = json_input(input)?;
    let subject = nats.namespace()?.exec(plugin);
    let client = nats.connect("mofa").await?;
    let (span, mut headers, trace_id) = traced(plugin, &subject);
    if let Some(key) = &options.route_key {
        headers.insert(wire::HEADER_ROUTE_KEY, key.as_str());
    }
    // The worker queues the request no longer than this command waits, and does not run it
    // once this command has given up.
    let deadline = wire::unix_ms().saturating_add(options.timeout.as_millis() as u64);
    headers.insert(wire::HEADER_DEADLINE, deadline.to_string().as_str());
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(wire::encode(&value))
        .timeout(Some(options.timeout));
    let sent = std::time::Instant::now();
    let answer = client
        .send_request(subject.clone(), request)
        .instrument(span)
        .await;
    if options.verbose {
        eprintln!("trace_id: {trace_id}");
        eprintln!("round trip: {} µs", sent.elapsed().as_micros());
    }
    let reply = answer.map_err(|e| unanswered(&e, nats, plugin, &subject, options.timeout))?;
    if options.verbose {
        print_revision(&reply);
    }
    if let Some((code, message)) = wire::reply_error(reply.headers.as_ref()) {
        eprintln!("error {code}: {message}");
        return Ok(ExitCode::from(1));
    }
    let output = wire::decode(&reply.payload).context("reply is not valid MessagePack")?;
    println!("{}", wire::to_json(&output));
    Ok(ExitCode::SUCCESS)
}

/// The request's trace: every request starts a sampled one (the CLI is run to look at one
/// request, so the sampler is not asked): the CLI's own span when it exports, else a fresh
/// traceparent, so the worker's span and result event carry an id to look up. The span, the
/// headers carrying it, and its trace id.
fn traced(plugin: &str, subject: &str) -> (tracing::Span, async_nats::HeaderMap, String) {
    use mofa_bus::telemetry;
    let span = if telemetry::enabled() {
        tracing::info_span!(
            target: telemetry::TARGET,
            "mofa exec",
            otel.name = format!("mofa exec {plugin}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = subject,
        )
    } else {
        tracing::Span::none()
    };
    let mut headers = async_nats::HeaderMap::new();
    let trace_id = match telemetry::trace_id(&span) {
        Some(trace_id) => {
            let _entered = span.enter();
            telemetry::inject(&mut headers);
            trace_id
        }
        None => {
            let (traceparent, trace_id) = telemetry::new_trace_parent();
            headers.insert(telemetry::TRACEPARENT, traceparent.as_str());
            trace_id
        }
    };
    (span, headers, trace_id)
}

/// Why no reply came, naming the plugin, the subject and the server asked.
fn unanswered(
    error: &async_nats::RequestError,
    nats: &Nats,
    plugin: &str,
    subject: &str,
    timeout: Duration,
) -> anyhow::Error {
    use async_nats::RequestErrorKind;
    anyhow::anyhow!(match error.kind() {
        RequestErrorKind::NoResponders => format!(
            "no worker serves plugin {plugin:?} (no responders on {subject} at {})",
            nats.shown()
        ),
        RequestErrorKind::TimedOut => format!(
            "no reply from plugin {plugin:?} within {} (asked on {subject} at {})",
            humantime::format_duration(timeout),
            nats.shown()
        ),
        _ => format!(
            "the request on {subject} at {} failed: {}",
            nats.shown(),
            mofa_bus::connection::cause(error)
        ),
    })
}

/// `--verbose`: the revision that answered, and whether it was the canary.
fn print_revision(reply: &async_nats::Message) {
    let revision = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::HEADER_REVISION))
        .map_or("- (not from the bucket)", |v| v.as_str());
    let canary = reply
        .headers
        .as_ref()
        .is_some_and(|h| h.get(wire::HEADER_CANARY).is_some());
    eprintln!(
        "revision: {revision}{}",
        if canary { " (canary)" } else { "" }
    );
}

/// A command's JSON input as a value (nil when absent).
pub(crate) fn json_input(input: Option<&str>) -> anyhow::Result<wire::Value> {
    match input {
        Some(text) => {
            let json: serde_json::Value =
                serde_json::from_str(text).context("input is not valid JSON")?;
            Ok(wire::from_json(&json))
        }
        None => Ok(wire::Value::Nil),
    }
}
