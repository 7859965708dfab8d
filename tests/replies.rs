//! Every admitted request gets a reply: a plugin that panics answers 500 and the worker keeps
//! its sandbox threads and its admission loop.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures::future::join_all;
use mofa_bus::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata};
use mofa_bus::wire::Value;

/// A plugin that panics on every call. Declared as `kind` so it runs where that kind runs:
/// Rhai on the sandbox threads, native inline in the admission loop.
struct Panics(PluginMetadata);

#[async_trait]
impl AgentPlugin for Panics {
    fn metadata(&self) -> &PluginMetadata {
        &self.0
    }
    async fn execute(&self, _input: Value) -> Result<Value, PluginError> {
        panic!("the plugin's own bug")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_plugin_answers_500_and_the_pool_keeps_its_threads() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[("double.rhai", "fn execute(x) { x * 2 }")]);
    let mut cfg = config(&server, dir.path());
    cfg.sandbox_threads = 2;
    let natives: Vec<std::sync::Arc<dyn AgentPlugin>> = vec![
        std::sync::Arc::new(Panics(PluginMetadata::new(
            "boom_sandboxed",
            PluginKind::Rhai,
        ))),
        std::sync::Arc::new(Panics(PluginMetadata::new(
            "boom_native",
            PluginKind::Native,
        ))),
        std::sync::Arc::new(mofa_bus::native::Echo::new()),
    ];
    let _worker = worker_with(cfg, natives).await;
    let client = server.client().await;
    wait_for_plugin(&client, "echo", Value::Nil).await;
    for plugin in ["boom_sandboxed", "boom_native"] {
        // Many more panics than the pool has threads.
        let replies = join_all((0..20).map(|_| call(&client, plugin, Value::Nil))).await;
        for reply in replies {
            assert_eq!(reply.code(), Some(500), "{plugin}: {reply:?}");
            let message = reply.message();
            assert!(
                message.contains(&format!("plugin {plugin} panicked: the plugin's own bug")),
                "{message}"
            );
        }
    }
    // Both threads of the pool still run scripts, and the admission loops still admit.
    let doubled = join_all((0..8).map(|i| call(&client, "double", Value::from(i)))).await;
    for (i, reply) in doubled.into_iter().enumerate() {
        assert_eq!(reply.expect_value(), Value::from(2 * i as i64));
    }
    assert_eq!(
        call(&client, "echo", Value::from(1)).await.expect_value(),
        Value::from(1)
    );
    expect_error(
        &client,
        "boom_native",
        Value::Nil,
        500,
        "panicked",
        Duration::from_secs(5),
    )
    .await;
}

/// Returns `n` bytes of binary, whatever the input.
struct Big(PluginMetadata, usize);

#[async_trait]
impl AgentPlugin for Big {
    fn metadata(&self) -> &PluginMetadata {
        &self.0
    }
    async fn execute(&self, _input: Value) -> Result<Value, PluginError> {
        Ok(Value::Binary(vec![1; self.1]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_over_the_servers_max_payload_are_413s_not_silence() {
    let server = NatsServer::start_with_conf("max_payload: 65536\n");
    let dir = plugins_dir(&[
        (
            "long.rhai",
            r#"fn execute(x) { let s = "x"; s.pad(100000, "y"); s }"#,
        ),
        (
            "loud.rhai",
            r#"fn execute(x) { let m = "e"; m.pad(100000, "!"); throw #{ code: 400, message: m } }"#,
        ),
        (
            "short.rhai",
            r#"fn execute(x) { let s = "x"; s.pad(60000, "y"); s.len() }"#,
        ),
    ]);
    let natives: Vec<std::sync::Arc<dyn AgentPlugin>> = vec![
        std::sync::Arc::new(Big(PluginMetadata::new("big", PluginKind::Native), 200_000)),
        std::sync::Arc::new(Big(PluginMetadata::new("fits", PluginKind::Native), 60_000)),
    ];
    let _worker = worker_with(config(&server, dir.path()), natives).await;
    let client = server.client().await;
    wait_for_plugin(&client, "short", Value::Nil).await;
    for plugin in ["long", "big"] {
        expect_error(
            &client,
            plugin,
            Value::Nil,
            413,
            "max_payload of 65536 bytes",
            Duration::from_secs(5),
        )
        .await;
    }
    // A huge error message is cut to fit, and says so.
    let reply = call(&client, "loud", Value::Nil).await;
    assert_eq!(reply.code(), Some(400), "{reply:?}");
    assert!(
        reply.message().ends_with("more bytes cut)"),
        "{}",
        reply.message().len()
    );
    assert!(reply.message().len() < 5000);
    // Replies that fit are untouched.
    assert_eq!(
        call(&client, "short", Value::Nil).await.expect_value(),
        Value::from(60000)
    );
    assert_eq!(
        call(&client, "fits", Value::Nil).await.expect_value(),
        Value::Binary(vec![1; 60_000])
    );
}
