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
//! Patterns are compiled once per sandbox thread and cached there (no lock on the request
//! path); a pattern longer than `rhai.max_regex_bytes` is refused with 413 before it is
//! compiled, and the compiled program's size is bounded too.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use super::config::RhaiConfig;

/// Patterns cached per thread; the cache is emptied when it reaches this size.
const REGEX_CACHE_ENTRIES: usize = 256;

/// Most memory one compiled pattern may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

thread_local! {
    static PATTERNS: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

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
    if pattern.len() > max_pattern {
        return Err(EvalAltResult::ErrorDataTooLarge(
            format!("matches() pattern of {} bytes", pattern.len()),
            Position::NONE,
        )
        .into());
    }
    PATTERNS.with(|cache| {
        if let Some(regex) = cache.borrow().get(pattern) {
            return Ok(regex.is_match(text));
        }
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| -> Box<EvalAltResult> { format!("matches(): {e}").into() })?;
        let found = regex.is_match(text);
        let mut cache = cache.borrow_mut();
        if cache.len() >= REGEX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex);
        Ok(found)
    })
}

fn parse_json(text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| -> Box<EvalAltResult> { format!("parse_json(): {e}").into() })?;
    rhai::serde::to_dynamic(value)
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
