//! `mofa mcp`: the fleet's tools over the Model Context Protocol, on stdio, with the official
//! Rust SDK (`rmcp`).
//!
//! `tools/list` answers with every tool the live workers serve ([`mofa_bus::fleet`]);
//! `tools/call` is a request on `mofa.exec.<tool>` (arguments as MessagePack) under the
//! server's call timeout, and an error reply comes back as an MCP tool error carrying the code
//! and message. The server follows the fleet: when a tool appears or goes (a reload event, or
//! a worker joining or leaving, seen by polling), it sends `notifications/tools/list_changed`.
//!
//! stdout carries the protocol and nothing else: every log line goes to stderr.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};

use mofa_bus::plugin::ToolSpec;
use mofa_bus::{fleet, subjects, wire};

use super::connect::NatsArgs;

/// How `mofa mcp` behaves.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// How long a tool call may take before it is an error.
    pub call_timeout: Duration,
    /// How long `tools/list` collects workers' answers.
    pub gather: Duration,
    /// How often the fleet is polled for tools that appear or go.
    pub poll: Duration,
    /// The environment whose workers' tools are offered.
    pub namespace: subjects::Namespace,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            gather: Duration::from_millis(300),
            poll: Duration::from_secs(2),
            namespace: subjects::Namespace::production(),
        }
    }
}

/// The MCP server: a NATS client and what it last saw of the fleet.
#[derive(Clone)]
pub struct McpServer {
    client: async_nats::Client,
    options: McpOptions,
    known: Arc<Mutex<Vec<ToolSpec>>>,
    peer: Arc<Mutex<Option<Peer<RoleServer>>>>,
}

impl McpServer {
    /// A server asking the fleet through `client`.
    pub fn new(client: async_nats::Client, options: McpOptions) -> Self {
        Self {
            client,
            options,
            known: Arc::new(Mutex::new(Vec::new())),
            peer: Arc::new(Mutex::new(None)),
        }
    }

    /// The fleet's tools now; remembers them, and says whether they changed.
    async fn refresh(&self) -> (Vec<ToolSpec>, bool) {
        let tools = match fleet::endpoints(
            &self.client,
            &self.options.namespace,
            self.options.gather,
        )
        .await
        {
            Ok(endpoints) => fleet::tools(&endpoints),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the fleet for its tools");
                return (self.known(), false);
            }
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *known != tools;
        *known = tools.clone();
        (tools, changed)
    }

    fn known(&self) -> Vec<ToolSpec> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Watches the fleet and tells the client when the tool list changes: at once after a
    /// reload event, and every `poll` otherwise.
    async fn follow(self) {
        let mut reloads = match self
            .client
            .subscribe(self.options.namespace.reload_events())
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow reload events; polling only");
                None
            }
        };
        let mut poll = tokio::time::interval(self.options.poll);
        loop {
            tokio::select! {
                _ = poll.tick() => {}
                event = async {
                    match reloads.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if event.is_none() {
                        reloads = None;
                    }
                }
            }
            let (_, changed) = self.refresh().await;
            let peer = self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let (true, Some(peer)) = (changed, peer) {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!(error = %e, "tool list change not sent");
                }
            }
        }
    }

    async fn call(&self, name: &str, arguments: serde_json::Value) -> CallToolResult {
        let fail = |text: String| CallToolResult::error(vec![ContentBlock::text(text)]);
        if subjects::validate_name(name).is_err() {
            return fail(format!("{name:?} is not a tool name"));
        }
        let request = async_nats::Request::new()
            .payload(wire::encode(&wire::from_json(&arguments)))
            .timeout(Some(self.options.call_timeout));
        let reply = match self
            .client
            .send_request(self.options.namespace.exec(name), request)
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                return fail(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        format!("no worker serves tool {name}")
                    }
                    async_nats::RequestErrorKind::TimedOut => format!(
                        "tool {name} did not answer within {}",
                        humantime::format_duration(self.options.call_timeout)
                    ),
                    _ => format!("tool {name}: {e}"),
                })
            }
        };
        if let Some((code, message)) = wire::reply_error(reply.headers.as_ref()) {
            return fail(format!("error {code}: {message}"));
        }
        match wire::decode(&reply.payload) {
            Ok(value) => {
                let json = wire::to_json(&value);
                if json.is_object() {
                    CallToolResult::structured(json)
                } else {
                    CallToolResult::success(vec![ContentBlock::text(json.to_string())])
                }
            }
            Err(e) => fail(format!("tool {name} answered something undecodable: {e}")),
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("mofa-bus", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools served by a mofa-bus fleet on NATS; each call is a request on mofa.exec.<tool>.",
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (tools, _) = self.refresh().await;
        Ok(ListToolsResult::with_all_items(
            tools.into_iter().map(to_mcp).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        Ok(self.call(&request.name, arguments).await.into())
    }
}

fn to_mcp(tool: ToolSpec) -> Tool {
    let schema = match tool.parameters {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    Tool::new(tool.name, tool.description, Arc::new(schema))
}

/// Serves MCP on stdin/stdout until the client closes the stream or `stop` resolves.
pub async fn serve_stdio(
    client: async_nats::Client,
    options: McpOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = McpServer::new(client, options);
    server.refresh().await;
    let follower = tokio::spawn(server.clone().follow());
    let running = server.serve(rmcp::transport::stdio()).await?;
    let token = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => { quit?; }
        _ = stop => token.cancel(),
    }
    follower.abort();
    Ok(())
}

/// Serve the fleet's tools to an MCP client (Model Context Protocol over stdio).
///
/// An MCP client starts it as a subprocess: command `mofa`, arguments `["mcp"]` (add
/// `"--nats", URL` when the server is not the default). tools/list lists every tool live
/// workers serve, tools/call sends a request on mofa.exec.<tool>; the client is notified when
/// tools appear or go. Logs go to stderr.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    mofa mcp                                # started by an MCP client, not by hand\n  \
    mofa mcp --nats nats://10.0.0.5:4222 --timeout 60s")]
pub(crate) struct McpArgs {
    /// How long a tool call may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl McpArgs {
    /// Serves until the client closes stdin or a signal comes.
    pub(crate) async fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let nats = self.nats.resolve();
        let client = nats.connect("mofa mcp").await?;
        let options = McpOptions {
            call_timeout: self.timeout,
            namespace: nats.namespace()?,
            ..Default::default()
        };
        serve_stdio(client, options, mofa_bus::worker::shutdown::signal())
            .await
            .map_err(|e| anyhow::anyhow!("MCP server: {e}"))?;
        Ok(std::process::ExitCode::SUCCESS)
    }
}
