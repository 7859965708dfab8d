//! The script shapes of the plugin-system docs on a real nats-server: entry binding by arity
//! and name, the shipped order processor, rule sets (priorities, file order, failing
//! conditions), the standard library, the kinds' subdirectories, and plugin-name clashes.

mod common;

use std::time::Duration;

use common::*;
use mofa_bus::wire::Value;

/// The docs' discount function, unchanged: two parameters, no entry line.
const CALCULATE_DISCOUNT: &str = r#"
fn calculate_discount(price, customer_tier) {
    let discount = 0.0;
    if customer_tier == "gold" {
        discount = 0.2;
    } else if customer_tier == "silver" {
        discount = 0.1;
    }
    price * (1.0 - discount)
}
"#;

/// A zero-parameter entry (the shape of `analyze_sales()`).
const NO_PARAMETERS: &str = r#"
fn report() {
    let total = 0.0;
    for row in parse_json("[{\"amount\": 10.5}, {\"amount\": 4.5}]") { total += row.amount; }
    #{ total_sales: total }
}
"#;

/// The docs' moderation rules, with the documented change: closures are called with
/// `.call(...)` (the docs' `(rule.condition)(message)` is not valid Rhai). Ties in priority run
/// in file order; `evaluate` (named last, as an entry would be) is not used by the engine.
const MODERATION: &str = r#"
let rules = [
    #{ name: "spam", priority: "high",
       condition: |message| contains_any(message.text, ["buy now", "free money"]),
       action: |message| #{ action: "block", reason: "spam" } },
    #{ name: "profanity", priority: "critical",
       condition: |message| has_profanity(message.text),
       action: |message| #{ action: "flag", reason: "profanity" } },
    #{ name: "links", priority: "high",
       condition: |message| matches(message.text, "https?://"),
       action: |message| #{ action: "review", reason: "link" } },
    #{ name: "shouting", priority: "medium",
       condition: |message| message.text.len() > 5 && message.text == message.text.to_upper(),
       action: |message| "calm down" },
    #{ name: "vip", priority: "low",
       condition: |message| message.user.vip,
       action: |message| #{ action: "allow", reason: "vip" } },
];

fn evaluate(message) {
    for rule in rules {
        if rule.condition.call(message) { return rule.action.call(message); }
    }
    #{ action: "allow" }
}

evaluate
"#;

fn text(text: &str) -> Value {
    map(&[
        ("text", Value::from(text)),
        ("user", map(&[("vip", Value::Boolean(false))])),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parameters_bind_by_count_and_name() {
    let server = NatsServer::start();
    let (worker, _dir) = serve(
        &server,
        &[
            ("calculate_discount.rhai", CALCULATE_DISCOUNT),
            ("scripts/report.rhai", NO_PARAMETERS),
        ],
        |_| {},
    )
    .await;
    assert!(
        worker.load_failures().is_empty(),
        "{:?}",
        worker.load_failures()
    );
    let client = server.client().await;
    let input = |price: Value, tier: &str| {
        map(&[
            ("customer_tier", Value::from(tier)),
            ("ignored", Value::from("extra fields are ignored")),
            ("price", price),
        ])
    };
    for (price, tier, expected) in [
        (Value::from(100), "gold", 80.0),
        (Value::F64(50.0), "silver", 45.0),
        (Value::from(10), "bronze", 10.0),
    ] {
        assert_eq!(
            call(&client, "calculate_discount", input(price, tier))
                .await
                .expect_value(),
            Value::F64(expected)
        );
    }
    let missing = call(
        &client,
        "calculate_discount",
        map(&[("price", Value::from(1))]),
    )
    .await;
    assert_eq!(missing.code(), Some(400));
    assert!(
        missing.message().contains("\"customer_tier\"")
            && missing
                .message()
                .contains("calculate_discount(price, customer_tier)"),
        "{missing:?}"
    );
    let not_a_map = call(&client, "calculate_discount", Value::from(5)).await;
    assert_eq!(not_a_map.code(), Some(400));
    assert!(
        not_a_map.message().contains("price, customer_tier"),
        "{not_a_map:?}"
    );

    // No parameters: whatever the input, nothing is bound.
    for input in [Value::Nil, Value::from(3), text("x")] {
        assert_eq!(
            call(&client, "report", input).await.expect_value(),
            map(&[("total_sales", Value::F64(15.0))])
        );
    }
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_order_processor_approves_or_escalates() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let order = |quantity: i64, price: f64| {
        map(&[
            ("id", Value::from("A-1")),
            ("quantity", Value::from(quantity)),
            ("price", Value::F64(price)),
        ])
    };
    assert_eq!(
        call(&client, "order_processor", order(12, 10.0))
            .await
            .expect_value(),
        // Rhai maps come back with their keys sorted.
        map(&[
            ("order_id", Value::from("A-1")),
            ("status", Value::from("approved")),
            ("total", Value::F64(120.0)),
        ])
    );
    assert_eq!(
        call(&client, "order_processor", order(3, 400.0))
            .await
            .expect_value(),
        map(&[
            ("next_agent", Value::from("manager")),
            ("status", Value::from("pending_approval")),
        ])
    );
    // The shipped rule set, found in plugins/rules/.
    let blocked = call(
        &client,
        "content_moderation",
        map(&[("text", Value::from("well damn"))]),
    )
    .await
    .expect_value();
    assert_eq!(blocked["rule"], Value::from("block_profanity"));
    assert_eq!(blocked["action"], Value::from("block"));
    let fine = call(
        &client,
        "content_moderation",
        map(&[("text", Value::from("see you at noon"))]),
    )
    .await
    .expect_value();
    assert_eq!(fine["matched"], Value::Boolean(false));
    assert_eq!(
        call(
            &client,
            "calculate_discount",
            map(&[
                ("price", Value::from(100)),
                ("customer_tier", Value::from("gold"))
            ])
        )
        .await
        .expect_value(),
        Value::F64(80.0)
    );
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_run_by_priority_then_file_order_and_failures_name_the_rule() {
    let server = NatsServer::start();
    let (worker, _dir) = serve(&server, &[("rules/moderation.rhai", MODERATION)], |_| {}).await;
    assert!(
        worker.load_failures().is_empty(),
        "{:?}",
        worker.load_failures()
    );
    let client = server.client().await;
    let rule_of = |reply: &Value| reply["rule"].clone();

    // critical beats high, whatever the file order.
    let out = call(&client, "moderation", text("buy now, damn it"))
        .await
        .expect_value();
    assert_eq!(rule_of(&out), Value::from("profanity"));
    assert_eq!(out["action"], Value::from("flag"));
    assert_eq!(out["matched"], Value::Boolean(true));
    // Two high rules match: the first in the file wins.
    let out = call(&client, "moderation", text("buy now at http://x.test"))
        .await
        .expect_value();
    assert_eq!(rule_of(&out), Value::from("spam"));
    let out = call(&client, "moderation", text("see http://x.test"))
        .await
        .expect_value();
    assert_eq!(rule_of(&out), Value::from("links"));
    assert_eq!(out["reason"], Value::from("link"));
    // A result that is not a map comes back under `result`.
    let out = call(&client, "moderation", text("HELLO THERE"))
        .await
        .expect_value();
    assert_eq!(rule_of(&out), Value::from("shouting"));
    assert_eq!(out["result"], Value::from("calm down"));
    // low
    let vip = map(&[
        ("text", Value::from("hi")),
        ("user", map(&[("vip", Value::Boolean(true))])),
    ]);
    let out = call(&client, "moderation", vip).await.expect_value();
    assert_eq!(rule_of(&out), Value::from("vip"));
    // No rule matches: a defined reply.
    assert_eq!(
        call(&client, "moderation", text("hello"))
            .await
            .expect_value(),
        map(&[("matched", Value::Boolean(false)), ("rule", Value::Nil)])
    );
    // A condition that fails names its rule: `user` is missing, so `message.user.vip` throws.
    let failed = call(
        &client,
        "moderation",
        map(&[("text", Value::from("hello"))]),
    )
    .await;
    assert_eq!(failed.code(), Some(500), "{failed:?}");
    assert!(failed.message().contains("rule \"vip\""), "{failed:?}");
    // A condition that returns something else than a bool.
    let odd = map(&[
        ("text", Value::from("hi")),
        ("user", map(&[("vip", Value::from("yes"))])),
    ]);
    let failed = call(&client, "moderation", odd).await;
    assert_eq!(failed.code(), Some(500));
    assert!(
        failed.message().contains("rule \"vip\"") && failed.message().contains("not a bool"),
        "{failed:?}"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_limits_and_malformed_rule_sets() {
    let server = NatsServer::start();
    let spin = r#"
let rules = [
    #{ name: "slow", priority: "high", condition: |m| { loop { } }, action: |m| 1 },
];
"#;
    let bad_priority = r#"let rules = [ #{ name: "x", priority: "urgent", condition: |m| true, action: |m| 1 } ];"#;
    let no_action = r#"let rules = [ #{ name: "y", priority: "low", condition: |m| true } ];"#;
    let regex = r#"fn execute(input) { matches(input.text, input.pattern) }"#;
    let (worker, _dir) = serve(
        &server,
        &[
            ("rules/slow.rhai", spin),
            ("rules/bad_priority.rhai", bad_priority),
            ("rules/no_action.rhai", no_action),
            ("regex.rhai", regex),
        ],
        |c| {
            c.rhai.timeout_ms = 200;
            c.rhai.max_operations = 0;
            c.rhai.max_regex_bytes = 16;
        },
    )
    .await;
    let mut failures: Vec<String> = worker
        .load_failures()
        .iter()
        .map(|f| f.error.clone())
        .collect();
    failures.sort();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("rule \"x\"") && failures[0].contains("urgent"),
        "{failures:?}"
    );
    assert!(
        failures[1].contains("rule \"y\"") && failures[1].contains("`action`"),
        "{failures:?}"
    );
    let client = server.client().await;
    expect_error(
        &client,
        "slow",
        text("x"),
        408,
        "rule \"slow\"",
        Duration::from_secs(2),
    )
    .await;
    let ok = call(
        &client,
        "regex",
        map(&[("text", Value::from("abc")), ("pattern", Value::from("b+"))]),
    )
    .await
    .expect_value();
    assert_eq!(ok, Value::Boolean(true));
    expect_error(
        &client,
        "regex",
        map(&[
            ("text", Value::from("abc")),
            ("pattern", Value::from("a".repeat(17))),
        ]),
        413,
        "rhai.max_regex_bytes",
        Duration::from_secs(2),
    )
    .await;
    let invalid = call(
        &client,
        "regex",
        map(&[("text", Value::from("abc")), ("pattern", Value::from("("))]),
    )
    .await;
    assert_eq!(invalid.code(), Some(500));
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standard_library_round_trips_json_and_checks_words() {
    let server = NatsServer::start();
    let script = r#"
fn execute(input) {
    let parsed = parse_json(input.json);
    #{
        back: to_json(parsed),
        profane: has_profanity(input.text),
        any: contains_any(input.text, ["BANANA", "kiwi"]),
        first: parsed.items[0],
    }
}"#;
    let (worker, _dir) = serve(&server, &[("lib.rhai", script)], |c| {
        c.rhai.profanity = vec!["heck".into()];
    })
    .await;
    let client = server.client().await;
    let out = call(
        &client,
        "lib",
        map(&[
            ("json", Value::from(r#"{"items":[1,2],"name":"x"}"#)),
            ("text", Value::from("Oh HECK, a banana")),
        ]),
    )
    .await
    .expect_value();
    assert_eq!(out["profane"], Value::Boolean(true), "the configured list");
    assert_eq!(out["any"], Value::Boolean(true), "case-insensitive");
    assert_eq!(out["first"], Value::from(1));
    let back: serde_json::Value =
        serde_json::from_str(out["back"].as_str().expect("text")).expect("JSON");
    assert_eq!(back, serde_json::json!({"items": [1, 2], "name": "x"}));
    let bad = call(
        &client,
        "lib",
        map(&[("json", Value::from("{oops")), ("text", Value::from(""))]),
    )
    .await;
    assert_eq!(bad.code(), Some(500));
    assert!(bad.message().contains("parse_json"), "{bad:?}");
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_named_like_a_native_plugin_is_a_load_failure_not_a_fatal_error() {
    let server = NatsServer::start();
    let (worker, _dir) = serve(
        &server,
        &[
            ("echo.rhai", "fn execute(x) { \"script\" }"),
            ("two.rhai", "fn a() {} fn b() {}"),
        ],
        |_| {},
    )
    .await;
    let failures = worker.load_failures();
    let clash = failures
        .iter()
        .find(|f| f.path.ends_with("echo.rhai"))
        .expect("echo.rhai reported");
    assert!(
        clash.error.contains("native plugin echo") && clash.error.contains("echo.rhai"),
        "{}",
        clash.error
    );
    let ambiguous = failures
        .iter()
        .find(|f| f.path.ends_with("two.rhai"))
        .expect("two.rhai reported");
    assert!(
        ambiguous.error.contains("no entry point"),
        "{}",
        ambiguous.error
    );
    // The native echo still serves.
    let client = server.client().await;
    assert_eq!(
        call(&client, "echo", Value::from(1)).await.expect_value(),
        Value::from(1)
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_set_publishes_and_hot_reloads_from_its_subdirectory() {
    let server = NatsServer::start();
    let (worker, _dir) = serve(&server, &[], |_| {}).await;
    let sources = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(sources.path().join("rules")).expect("dir");
    let file = sources.path().join("rules/moderation.rhai");
    std::fs::write(&file, MODERATION).expect("written");
    let published = std::process::Command::new(env!("CARGO_BIN_EXE_mofa"))
        .arg("publish")
        .arg(&file)
        .args(["--nats", &server.url()])
        .output()
        .expect("mofa publish");
    assert!(published.status.success(), "{published:?}");
    let client = server.client().await;
    wait_for_plugin(&client, "moderation", text("x")).await;
    let out = call(&client, "moderation", text("free money, buy now"))
        .await
        .expect_value();
    assert_eq!(out["rule"], Value::from("spam"));
    worker.shutdown().await.expect("drains");
}

/// Short scripts start on the thread that received the request and move to a sandbox thread
/// only when they act (`state_set`, `call_plugin`) or run long: either way a call acts once,
/// and a runaway still ends at its deadline while the others keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_that_start_inline_act_exactly_once_and_long_ones_still_end_at_their_deadline() {
    let server = NatsServer::start();
    let dir = plugins_dir(&[
        (
            "count.rhai",
            "fn execute(x) { let n = state_get(\"n\") ?? 0; state_set(\"n\", n + 1); n }",
        ),
        (
            "spin_count.rhai",
            "fn execute(x) { let i = 0; while i < 30000 { i += 1; } let n = state_get(\"n\") ?? 0; state_set(\"n\", n + 1); n }",
        ),
        ("double.rhai", "fn execute(x) { x * 2 }"),
        ("runaway.rhai", "fn execute(x) { loop {} }"),
    ]);
    let mut config = config(&server, dir.path());
    config.rhai.timeout_ms = 300;
    config.rhai.max_operations = 0;
    let _worker = worker(config).await;
    let client = server.client().await;
    wait_until_listed(&client, "count").await;
    for plugin in ["count", "spin_count"] {
        for expected in 0..150 {
            let reply = call(&client, plugin, Value::Nil).await;
            assert_eq!(
                reply.expect_value(),
                Value::from(expected),
                "{plugin}: each call counts once"
            );
        }
    }
    // A runaway moves to a sandbox thread and ends at its deadline; the others keep answering
    // meanwhile, and it does the same the next time.
    let runaway = |client: async_nats::Client| async move {
        expect_error(
            &client,
            "runaway",
            Value::Nil,
            408,
            "deadline",
            Duration::from_secs(3),
        )
        .await
    };
    let first = tokio::spawn(runaway(client.clone()));
    for i in 0..200i64 {
        assert_eq!(
            call(&client, "double", Value::from(i)).await.expect_value(),
            Value::from(i * 2)
        );
    }
    first.await.expect("runaway answered 408");
    runaway(client.clone()).await;
}
