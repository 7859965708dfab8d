//! Tools an LLM can call, on a real nats-server: served under the tool's name with its schema
//! in `$SRV.INFO`, arguments validated before the script runs, `mofa tools` in every format
//! (including a tool published after the fleet started), malformed tools refused at load, and
//! `mofa mcp` driven by an MCP client this project did not write (the official Python SDK).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use mofa_bus::wire::Value;

const ADDER: &str = r#"
let tool = #{
    name: "add_numbers",
    description: "Adds two integers",
    parameters: #{
        type: "object",
        properties: #{ a: #{ type: "integer" }, b: #{ type: "integer", minimum: 0 } },
        required: ["a", "b"]
    }
};
fn execute(args) { args.a + args.b }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tool_serves_under_its_name_and_validates_arguments() {
    let bus = TestBus::repo().await;
    let client = bus.client.clone();
    let ok = call(
        &client,
        "get_weather",
        map(&[("city", Value::from("Oslo"))]),
    )
    .await
    .expect_value();
    assert_eq!(ok["city"], Value::from("Oslo"));
    assert_eq!(ok["units"], Value::from("celsius"));
    let f = call(
        &client,
        "get_weather",
        map(&[
            ("city", Value::from("Oslo")),
            ("units", Value::from("fahrenheit")),
        ]),
    )
    .await
    .expect_value();
    assert_eq!(f["units"], Value::from("fahrenheit"));
    for (input, needle, rule) in [
        (map(&[]), "\"city\" is a required property", "required"),
        (map(&[("city", Value::from(3))]), "argument city", "type"),
        (
            map(&[
                ("city", Value::from("Oslo")),
                ("units", Value::from("kelvin")),
            ]),
            "argument units",
            "enum",
        ),
        (
            map(&[("city", Value::from("Oslo")), ("wind", Value::from(true))]),
            "arguments",
            "additionalProperties",
        ),
        (Value::from("Oslo"), "arguments", "type"),
    ] {
        let reply = call(&client, "get_weather", input.clone()).await;
        assert_eq!(reply.code(), Some(400), "{input}: {reply:?}");
        let message = reply.message();
        assert!(
            message.contains(needle) && message.contains(&format!("`{rule}`")),
            "{input}: {message}"
        );
    }
    // The file's own name is not served: the tool's is.
    let by_file = call_raw(
        &client,
        "weather",
        mofa_bus::wire::encode(&Value::Nil),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        by_file.is_err(),
        "weather.rhai is served as get_weather only"
    );
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_returning_its_tool_map_is_a_tool_too() {
    let returned = r#"
fn execute(args) { args.word.to_upper() }
#{ name: "shout", description: "Upper-cases a word",
   parameters: #{ type: "object", properties: #{ word: #{ type: "string" } }, required: ["word"] } }
"#;
    let bus = TestBus::builder()
        .scripts(&[("tools_shout.rhai", returned)])
        .start()
        .await;
    assert_loaded(&bus.worker);
    let client = bus.client.clone();
    assert_eq!(
        call(&client, "shout", map(&[("word", Value::from("hey"))]))
            .await
            .expect_value(),
        Value::from("HEY")
    );
    assert_eq!(call(&client, "shout", map(&[])).await.code(), Some(400));
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_tools_fail_to_load_saying_what_is_wrong() {
    let server = NatsServer::start();
    let tool = |body: &str| format!("let tool = {body}; fn execute(args) {{ args }}");
    let files = [
        ("no_name.rhai", tool(r#"#{ description: "d", parameters: #{ type: "object" } }"#)),
        ("no_description.rhai", tool(r#"#{ name: "t1", parameters: #{ type: "object" } }"#)),
        ("bad_schema.rhai", tool(r#"#{ name: "t2", description: "d", parameters: #{ type: "object", properties: #{ a: #{ type: "strin" } } } }"#)),
        ("not_object.rhai", tool(r#"#{ name: "t3", description: "d", parameters: #{ type: "string" } }"#)),
        ("bad_name.rhai", tool(r#"#{ name: "a.b", description: "d", parameters: #{ type: "object" } }"#)),
        ("no_execute.rhai", r#"let tool = #{ name: "t4", description: "d", parameters: #{ type: "object" } }; fn other(a, b) { a }"#.to_string()),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let dir = plugins_dir(&refs);
    let worker = worker(config(&server, dir.path())).await;
    let error = |file: &str| {
        worker
            .load_failures()
            .iter()
            .find(|f| f.path.ends_with(file))
            .map(|f| f.error.clone())
            .unwrap_or_else(|| panic!("{file} should fail to load"))
    };
    assert!(error("no_name.rhai").contains("`name` is missing"));
    assert!(error("no_description.rhai").contains("`description` is missing"));
    let schema = error("bad_schema.rhai");
    assert!(schema.contains("not a valid JSON Schema"), "{schema}");
    assert!(error("not_object.rhai").contains("type: \"object\""));
    assert!(error("bad_name.rhai").contains("`name`"));
    assert!(error("no_execute.rhai").contains("fn execute(args)"));
    assert_eq!(worker.load_failures().len(), 6);
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mofa_tools_lists_a_tool_published_after_the_fleet_started() {
    let server = NatsServer::start();
    let empty = plugins_dir(&[]);
    let worker = worker(config(&server, empty.path())).await;
    let url = server.url();
    let listed = mofa(&["tools"], &url);
    assert!(listed.status.success(), "{listed:?}");
    let none: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(none, serde_json::json!([]));

    let sources = plugins_dir(&[("adder.rhai", ADDER)]);
    let file = sources.path().join("adder.rhai");
    let published = mofa(&["publish", file.to_str().expect("UTF-8")], &url);
    assert!(published.status.success(), "{published:?}");
    assert!(
        String::from_utf8_lossy(&published.stdout).contains("add_numbers"),
        "keyed by the tool's name: {published:?}"
    );
    let client = server.client().await;
    wait_for_plugin(
        &client,
        "add_numbers",
        map(&[("a", Value::from(1)), ("b", Value::from(2))]),
    )
    .await;
    assert_eq!(
        call(
            &client,
            "add_numbers",
            map(&[("a", Value::from(1)), ("b", Value::from(2))])
        )
        .await
        .expect_value(),
        Value::from(3)
    );
    let below = call(
        &client,
        "add_numbers",
        map(&[("a", Value::from(1)), ("b", Value::from(-2))]),
    )
    .await;
    assert_eq!(below.code(), Some(400), "{below:?}");
    assert!(below.message().contains("argument b"), "{below:?}");

    let shapes = [
        ("json", "/0/name", "/0/parameters/required/0"),
        (
            "openai",
            "/0/function/name",
            "/0/function/parameters/required/0",
        ),
        ("anthropic", "/0/name", "/0/input_schema/required/0"),
        ("mcp", "/0/name", "/0/inputSchema/required/0"),
    ];
    for (format, name_at, required_at) in shapes {
        let out = mofa(&["tools", "--format", format], &url);
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            json.pointer(name_at),
            Some(&serde_json::json!("add_numbers")),
            "{format}: {json}"
        );
        assert_eq!(
            json.pointer(required_at),
            Some(&serde_json::json!("a")),
            "{format}: {json}"
        );
    }
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mcp_call_past_the_servers_timeout_is_a_tool_error() {
    let server = NatsServer::start();
    let slow = r#"
let tool = #{ name: "slow", description: "Never finishes in time", parameters: #{ type: "object" } };
fn execute(args) { loop { } }
"#;
    let dir = plugins_dir(&[("slow.rhai", slow)]);
    let mut cfg = config(&server, dir.path());
    cfg.rhai.timeout_ms = 6_000;
    cfg.rhai.max_operations = 0;
    let worker = worker(cfg).await;
    let out = mcp_client()
        .await
        .args([env!("CARGO_BIN_EXE_mofa"), &server.url(), "slow"])
        .stderr(Stdio::inherit())
        .output()
        .expect("the MCP client runs");
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["is_error"], true, "{line}");
    assert!(
        line["text"]
            .as_str()
            .is_some_and(|t| t.contains("did not answer within 1s")),
        "{line}"
    );
    let seconds = line["seconds"].as_f64().expect("seconds");
    assert!(
        seconds < 4.0,
        "answered after {seconds} s, the script's own deadline is 6 s"
    );
    worker.shutdown().await.expect("drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mcp_client_lists_and_calls_fleet_tools_and_hears_of_new_ones() {
    let server = NatsServer::start();
    let worker = worker(config(&server, &repo_plugins())).await;
    let mut client = mcp_client()
        .await
        .args([env!("CARGO_BIN_EXE_mofa"), &server.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the MCP client starts");
    let lines = Lines::of(client.stdout.take().expect("stdout"), "the MCP client");
    let next = || lines.next_json();
    let listed = next();
    let weather = listed["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["name"] == "get_weather"))
        .unwrap_or_else(|| panic!("get_weather listed: {listed}"));
    assert_eq!(weather["schema"]["required"], serde_json::json!(["city"]));
    assert_eq!(weather["description"], "Get the current weather for a city");
    let good = next();
    assert_eq!(good["is_error"], false, "{good}");
    assert_eq!(good["structured"]["city"], "Paris", "{good}");
    let bad = next();
    assert_eq!(bad["is_error"], true, "{bad}");
    assert!(
        bad["text"]
            .as_str()
            .is_some_and(|t| t.contains("400") && t.contains("city")),
        "{bad}"
    );
    let missing = next();
    assert_eq!(missing["is_error"], true, "{missing}");
    assert!(
        missing["text"]
            .as_str()
            .is_some_and(|t| t.contains("no worker serves")),
        "{missing}"
    );
    assert_eq!(next()["waiting"], "tools/list_changed");

    let sources = plugins_dir(&[("adder.rhai", ADDER)]);
    let published = mofa(
        &[
            "publish",
            sources.path().join("adder.rhai").to_str().expect("UTF-8"),
        ],
        &server.url(),
    );
    assert!(published.status.success(), "{published:?}");
    let after = next();
    let names = after["tools_after"].as_array().expect("names").clone();
    assert!(names.contains(&serde_json::json!("add_numbers")), "{after}");
    assert!(names.contains(&serde_json::json!("get_weather")), "{after}");
    let status = client.wait().expect("client exits");
    assert!(status.success(), "{status:?}");
    worker.shutdown().await.expect("drains");
}
