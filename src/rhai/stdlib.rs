//! The standard library every script (and every rule) can call, registered once on the engine:
//!
//! | function | returns |
//! |---|---|
//! | `has_profanity(text)` | whether `text` contains a word of `rhai.profanity` (whole words, case-insensitive) |
//! | `contains_any(text, list)` | whether `text` contains any string of `list` (case-insensitive) |
//! | `matches(text, pattern)` | whether the regular expression `pattern` (Rust `regex` syntax) matches somewhere in `text` |
//! | `parse_json(text)` | the JSON value as a Rhai value (objects as maps, arrays as arrays) |
//! | `to_json(value)` | the value as JSON text |
//!
//! `matches` is the one WASM modules reach as `mofa::matches` ([`crate::plugin::matcher`]):
//! patterns compiled once per sandbox thread and cached; a pattern longer than
//! `rhai.max_regex_bytes` is refused with 413 before it is compiled.

use std::collections::HashSet;
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use super::config::RhaiConfig;
use crate::plugin::matcher::{self, MatchError};

/// Registers the standard library on `engine`.
pub(crate) fn register(engine: &mut Engine, config: &RhaiConfig) {
    let words: Arc<HashSet<String>> =
        Arc::new(config.profanity.iter().map(|w| w.to_lowercase()).collect());
    let max_pattern = config.max_regex_bytes;
    engine
        .register_fn("has_profanity", move |text: &str| {
            has_profanity(&words, text)
        })
        .register_fn("contains_any", contains_any)
        .register_fn(
            "matches",
            move |text: &str, pattern: &str| -> Result<bool, Box<EvalAltResult>> {
                matches(text, pattern, max_pattern)
            },
        )
        .register_fn("parse_json", parse_json)
        .register_fn("to_json", to_json);
}

fn has_profanity(words: &HashSet<String>, text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .any(|w| words.contains(&w.to_lowercase()))
}

fn contains_any(text: &str, list: rhai::Array) -> bool {
    let text = text.to_lowercase();
    list.iter()
        .filter_map(|item| item.read_lock::<rhai::ImmutableString>())
        .any(|needle| !needle.is_empty() && text.contains(&needle.to_lowercase()))
}

fn matches(text: &str, pattern: &str, max_pattern: usize) -> Result<bool, Box<EvalAltResult>> {
    matcher::matches(text, pattern, max_pattern, "rhai.max_regex_bytes").map_err(|e| match e {
        MatchError::TooLong { len, .. } => EvalAltResult::ErrorDataTooLarge(
            format!("matches() pattern of {len} bytes"),
            Position::NONE,
        )
        .into(),
        MatchError::Invalid(e) => format!("matches(): {e}").into(),
    })
}

/// Deserializes straight into Rhai values (no intermediate `serde_json::Value`: one
/// allocation per node, not two).
fn parse_json(text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    serde_json::from_str::<Dynamic>(text)
        .map_err(|e| -> Box<EvalAltResult> { format!("parse_json(): {e}").into() })
}

fn to_json(value: Dynamic) -> Result<String, Box<EvalAltResult>> {
    let json: serde_json::Value = rhai::serde::from_dynamic(&value)?;
    serde_json::to_string(&json).map_err(|e| format!("to_json(): {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profanity_is_whole_words_and_case_insensitive() {
        let words: HashSet<String> = ["damn".to_string()].into();
        assert!(has_profanity(&words, "Well, DAMN it"));
        assert!(!has_profanity(&words, "the damnation of Faust"));
        assert!(!has_profanity(&words, ""));
    }

    #[test]
    fn patterns_over_the_limit_are_refused_before_compiling() {
        assert_eq!(matches("abc", "b+", 16).ok(), Some(true));
        assert_eq!(matches("abc", "^b", 16).ok(), Some(false));
        let err = matches("abc", &"a".repeat(17), 16).expect_err("too long");
        assert!(
            matches!(*err, EvalAltResult::ErrorDataTooLarge(ref what, _) if what.contains("pattern of 17 bytes")),
            "{err}"
        );
        assert!(matches("abc", "(", 16).is_err());
    }
}
