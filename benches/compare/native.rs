//! The comparison's three operations in Rust, and each as a native plugin
//! (`AgentPlugin`) that the benchmark's worker serves through `Worker::start_with`, the way an
//! application embeds its own native plugins. Same contract as `compare_ops.wasm`, the Rhai
//! scripts beside this file and `ops.py`: every operation takes `{text: string}`.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use mofa_bus::native::field;
use mofa_bus::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata};
use mofa_bus::wire::Value;

/// The pattern of the regex operation.
pub const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}";

static EMAIL_REGEX: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(EMAIL).expect("the e-mail pattern compiles"));

/// The profanity list of the rules operation: the worker's default `rhai.profanity`.
static PROFANITY: LazyLock<HashSet<String>> = LazyLock::new(|| {
    mofa_bus::rhai::RhaiConfig::default()
        .profanity
        .into_iter()
        .collect()
});

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Json,
    Regex,
    Rules,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Json, Op::Regex, Op::Rules];

    /// The short name: plugin names, subjects and the WASM manifest's `op` use it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Json => "json",
            Op::Regex => "regex",
            Op::Rules => "rules",
        }
    }

    /// Runs the operation on a request value.
    pub fn apply(self, input: &Value) -> Result<Value, PluginError> {
        let text = field(input, "text")?
            .as_str()
            .ok_or_else(|| PluginError::BadInput("text must be a string".into()))?;
        match self {
            Op::Json => order_summary(text),
            Op::Regex => Ok(map(vec![(
                "matched",
                Value::from(EMAIL_REGEX.is_match(text)),
            )])),
            Op::Rules => Ok(moderate(text)),
        }
    }
}

fn order_summary(text: &str) -> Result<Value, PluginError> {
    let order: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PluginError::BadInput(format!("not JSON: {e}")))?;
    let items = order
        .get("items")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| PluginError::BadInput("the order has no \"items\" array".into()))?;
    let mut total = 0.0;
    for item in items {
        let number = |key: &str| {
            item.get(key)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| PluginError::BadInput(format!("an item has no number \"{key}\"")))
        };
        total += number("qty")? * number("price")?;
    }
    Ok(map(vec![
        ("items", Value::from(items.len())),
        ("total", Value::F64(total)),
    ]))
}

/// `plugins/rules/content_moderation.rhai`, written out in Rust.
fn moderate(text: &str) -> Value {
    let verdict = |rule: &str, action: &str, reason: &str| {
        map(vec![
            ("action", Value::from(action)),
            ("reason", Value::from(reason)),
            ("rule", Value::from(rule)),
            ("matched", Value::from(true)),
        ])
    };
    let profane = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .any(|w| PROFANITY.contains(&w.to_lowercase()));
    if profane {
        return verdict("block_profanity", "block", "profanity");
    }
    let lower = text.to_lowercase();
    let link = lower.contains("http://") || lower.contains("https://");
    let spam = ["free", "winner", "click here", "limited offer"];
    if link && spam.iter().any(|s| lower.contains(s)) {
        return verdict("flag_spam_link", "flag", "link with spam words");
    }
    let chars = text.chars().count();
    if chars >= 12 && text == text.to_uppercase() {
        return verdict("review_shouting", "review", "all capitals");
    }
    if chars > 2000 {
        return verdict("review_long", "review", "longer than 2000 characters");
    }
    map(vec![("rule", Value::Nil), ("matched", Value::from(false))])
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// One operation as a native plugin, named `<op>_native`.
pub struct NativeOp {
    op: Op,
    meta: PluginMetadata,
}

impl NativeOp {
    /// The three operations as native plugins.
    pub fn all() -> Vec<Arc<dyn AgentPlugin>> {
        Op::ALL
            .into_iter()
            .map(|op| {
                Arc::new(NativeOp {
                    op,
                    meta: PluginMetadata::new(format!("{}_native", op.name()), PluginKind::Native)
                        .description("an operation of the performance comparison"),
                }) as Arc<dyn AgentPlugin>
            })
            .collect()
    }
}

#[async_trait]
impl AgentPlugin for NativeOp {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        self.op.apply(&input)
    }
}
