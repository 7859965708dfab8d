//! `compare_ops`: the three operations of the performance comparison (`cargo bench --bench
//! compare`) as one WASM module, so the sandbox is measured doing the same work as the native
//! plugin, the Rhai script and the Python function beside it.
//!
//! The manifest's `[config] op` picks the operation (the benchmark serves the module three
//! times, once per operation); every operation takes `{text: string}`:
//!
//! - `json`: `text` is an order document; parses it and returns `{items, total}`, the number
//!   of line items and the sum of `qty * price`;
//! - `regex`: returns `{matched}`, whether `text` contains an e-mail address;
//! - `rules`: the content-moderation rule set of `plugins/rules/content_moderation.rhai`, with
//!   the word list of `[config] profanity`: the first matching rule's action plus
//!   `{rule, matched: true}`, else `{rule: nil, matched: false}`.
//!
//! The regex runs in the host (`mofa::matches`, capability `matches`): each request runs in a
//! fresh instance, and a pattern compiled inside the module would be compiled on every call.

use mofa_guest::{export, field, Error, Value};

/// The pattern of the `regex` operation (the benchmark's other implementations use the same).
const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}";

fn handle(input: Value) -> Result<Value, Error> {
    let text = field(&input, "text")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_input("input must be a map with a string field \"text\""))?;
    match mofa_guest::config("op").as_ref().and_then(Value::as_str) {
        Some("json") => order_summary(text),
        Some("regex") => Ok(map(vec![(
            "matched",
            Value::from(mofa_guest::matches(EMAIL, text)?),
        )])),
        Some("rules") => moderate(text),
        other => Err(Error::failed(format!(
            "manifest [config] op must be \"json\", \"regex\" or \"rules\", got {other:?}"
        ))),
    }
}

fn order_summary(text: &str) -> Result<Value, Error> {
    let order: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::bad_input(format!("not JSON: {e}")))?;
    let items = order
        .get("items")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Error::bad_input("the order has no \"items\" array"))?;
    let mut total = 0.0;
    for item in items {
        let number = |key: &str| {
            item.get(key)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| Error::bad_input(format!("an item has no number \"{key}\"")))
        };
        total += number("qty")? * number("price")?;
    }
    Ok(map(vec![
        ("items", Value::from(items.len())),
        ("total", Value::F64(total)),
    ]))
}

fn moderate(text: &str) -> Result<Value, Error> {
    let words = mofa_guest::config("profanity");
    let words: Vec<&str> = words
        .as_ref()
        .and_then(Value::as_array)
        .ok_or_else(|| Error::failed("manifest [config] profanity must be a list of words"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let profane = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .any(|w| words.iter().any(|p| w.to_lowercase() == *p));
    let verdict = |rule: &str, action: &str, reason: &str| {
        map(vec![
            ("action", Value::from(action)),
            ("reason", Value::from(reason)),
            ("rule", Value::from(rule)),
            ("matched", Value::from(true)),
        ])
    };
    if profane {
        return Ok(verdict("block_profanity", "block", "profanity"));
    }
    let lower = text.to_lowercase();
    let link = lower.contains("http://") || lower.contains("https://");
    let spam = ["free", "winner", "click here", "limited offer"];
    if link && spam.iter().any(|s| lower.contains(s)) {
        return Ok(verdict("flag_spam_link", "flag", "link with spam words"));
    }
    let chars = text.chars().count();
    if chars >= 12 && text == text.to_uppercase() {
        return Ok(verdict("review_shouting", "review", "all capitals"));
    }
    if chars > 2000 {
        return Ok(verdict(
            "review_long",
            "review",
            "longer than 2000 characters",
        ));
    }
    Ok(map(vec![
        ("rule", Value::Nil),
        ("matched", Value::from(false)),
    ]))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

export!(handle);
