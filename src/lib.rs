//! mofa-bus: a plugin-execution service on NATS.
//!
//! A worker connects to NATS and serves every plugin on its own subject `mofa.exec.<plugin>`
//! in the queue group `mofa`, so workers scale horizontally and any one of them can die.
//! Requests and replies are MessagePack.
//!
//! The layers, top to bottom; a module uses only modules below it (a test keeps this true:
//! `the_layers_point_one_way`):
//! - [`worker`]: the NATS side: one subscription per plugin, admission (a per-plugin concurrency
//!   permit; when none is free the request waits in the plugin's bounded queue, and a full queue
//!   or a wait that runs out is answered 503), replies, events, the NATS Services API
//!   (`$SRV.PING/INFO/STATS`), hot reload from the plugins bucket, durable jobs, and drain on
//!   SIGTERM. Beside it at the top: [`local`], the same plugins built and run with no bus
//!   (`mofa run`, `mofa test`, the check `mofa publish` makes first), and [`fleet`], the client
//!   side that asks the workers what they serve.
//! - [`config`]: the worker's configuration, one section per layer below, each section defined
//!   by its layer.
//! - [`jobs`] and [`distribution`]: the two JetStream sides: durable jobs (`mofa.jobs.<plugin>`:
//!   the streams, the results bucket, submitting, waiting and dead letters) and the publishing
//!   side of hot reload (plugin records, the buckets, publish, rollback, signatures, the
//!   `[reload]` settings). Both make their streams through [`provision`], which creates what
//!   is missing where the credential may and otherwise says to run `mofa setup`.
//! - [`kinds`]: the table of plugin kinds that arrive as code (Rhai, WASM): files, records,
//!   how each is built and where it runs.
//! - [`native`], [`rhai`] and [`wasm`]: the plugin kinds: Rust compiled in (among them
//!   `database`, SQL over sqlx), sandboxed Rhai scripts, and WebAssembly modules in wasmtime.
//! - [`plugin`]: the plugin model: the [`plugin::AgentPlugin`] trait, metadata, the lifecycle
//!   state machine, the [`plugin::PluginManager`] and the sandbox thread pool.
//! - [`telemetry`], [`connection`], [`nats_server`] and [`pyvenv`]: logs, traces and metrics;
//!   how anything connects to NATS; finding (or installing once) a current nats-server, with
//!   the cached-venv installer it uses.
//! - [`wire`], [`events`] and [`subjects`]: the wire format, the result and reload events,
//!   and subject names: the public contract described in `subjects.md`.
//!
//! How a request flows: NATS message on `mofa.exec.discount` → that plugin's subscription →
//! admission permit → native: decode, `execute` inline, encode, reply, result event on
//! `mofa.events.result.discount`; Rhai and WASM: the same steps under the plugin's deadline,
//! inline too while the plugin's calls are short (each bounded, and run again from the start
//! on a sandbox thread if it must act or runs long: see [`plugin::InlineGate`]), otherwise on a
//! sandbox thread.
//!
//! What only the `mofa` command line uses (the `--dev` server, the MCP server, the canary
//! comparison, the directory watcher) lives with it, in the binary's `cmd/`.

pub mod config;
pub mod connection;
pub mod distribution;
pub mod events;
pub mod fleet;
pub mod jobs;
pub mod kinds;
pub mod local;
pub mod native;
pub mod nats_server;
pub mod plugin;
pub mod provision;
pub mod pyvenv;
pub mod rhai;
pub mod subjects;
pub mod telemetry;
pub mod wasm;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod layers {
    /// Each module's layer, as the crate docs list them (higher uses lower).
    const RANKS: &[(&str, u32)] = &[
        ("fleet", 100),
        ("worker", 90),
        ("local", 90),
        ("config", 80),
        ("jobs", 70),
        ("distribution", 70),
        ("provision", 65),
        ("kinds", 60),
        ("native", 50),
        ("rhai", 50),
        ("wasm", 50),
        ("plugin", 40),
        ("telemetry", 30),
        ("connection", 32),
        ("nats_server", 31),
        ("pyvenv", 30),
        ("events", 12),
        ("wire", 10),
        ("subjects", 10),
    ];

    fn rank(module: &str) -> u32 {
        RANKS
            .iter()
            .find(|(name, _)| *name == module)
            .map(|(_, rank)| *rank)
            .unwrap_or_else(|| panic!("module {module} has no layer in lib.rs's list"))
    }

    /// The modules a path after `crate::` names: `wire::Value` names `wire`,
    /// `{plugin::{A, B}, wire}` names `plugin` and `wire`.
    fn modules_named(used: &str) -> Vec<String> {
        let ident = |text: &str| -> String {
            text.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let Some(group) = used.strip_prefix('{') else {
            return vec![ident(used)];
        };
        let mut names = vec![ident(group)];
        let mut depth = 1;
        for (at, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => names.push(ident(&group[at + 1..])),
                _ => {}
            }
        }
        names.retain(|name| !name.is_empty());
        names
    }

    /// Every `crate::<module>` a file of the library uses (outside comments and its tests)
    /// names a module of a lower layer, or its own.
    #[test]
    fn the_layers_point_one_way() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![];
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src/").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !path.ends_with("cmd") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut upward = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).expect("under src/");
            let top = relative
                .iter()
                .next()
                .and_then(|c| c.to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs");
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("reads");
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join(" ");
            for used in code.split("crate::").skip(1) {
                for module in modules_named(used) {
                    if module != top && rank(&module) > rank(top) {
                        upward.push(format!("{}: {top} uses {module}", relative.display()));
                    }
                }
            }
        }
        assert!(upward.is_empty(), "imports pointing up: {upward:#?}");
    }
}
