//! Regular expressions for sandboxed code: Rhai's `matches(text, pattern)` and the WASM host
//! function `mofa::matches`. Both kinds share this one implementation, so a pattern means the
//! same thing (Rust `regex` syntax) and costs the same everywhere.
//!
//! Patterns are compiled once per sandbox thread and cached there: no lock on the request path,
//! and a WASM module, which runs in a fresh instance per request, does not recompile its pattern
//! on every call. A pattern longer than the configured limit is refused before it is compiled,
//! and the compiled program's size is bounded too.

use std::cell::RefCell;
use std::collections::HashMap;

/// Patterns cached per thread; the cache is emptied when it reaches this size.
const CACHE_ENTRIES: usize = 256;

/// Most memory one compiled pattern may take.
const SIZE_LIMIT: usize = 1 << 20;

thread_local! {
    static PATTERNS: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// Why a pattern could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Longer than the limit (`limit_key` names the config key that sets it).
    #[error("pattern of {len} bytes exceeds the limit of {max} bytes ({limit_key})")]
    TooLong {
        len: usize,
        max: usize,
        limit_key: &'static str,
    },
    /// Not a valid pattern, or its compiled program is too large.
    #[error("invalid pattern: {0}")]
    Invalid(String),
}

/// Whether `pattern` matches somewhere in `text`. `max_pattern` bytes at most (`limit_key` is
/// the config key that sets it, for the error).
pub fn matches(
    text: &str,
    pattern: &str,
    max_pattern: usize,
    limit_key: &'static str,
) -> Result<bool, MatchError> {
    if pattern.len() > max_pattern {
        return Err(MatchError::TooLong {
            len: pattern.len(),
            max: max_pattern,
            limit_key,
        });
    }
    PATTERNS.with(|cache| {
        if let Some(regex) = cache.borrow().get(pattern) {
            return Ok(regex.is_match(text));
        }
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| MatchError::Invalid(e.to_string()))?;
        let found = regex.is_match(text);
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex);
        Ok(found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_over_the_limit_are_refused_before_compiling() {
        assert_eq!(matches("abc", "b+", 16, "k"), Ok(true));
        assert_eq!(matches("abc", "^b", 16, "k"), Ok(false));
        let err = matches("abc", &"a".repeat(17), 16, "rhai.max_regex_bytes").expect_err("long");
        assert_eq!(
            err.to_string(),
            "pattern of 17 bytes exceeds the limit of 16 bytes (rhai.max_regex_bytes)"
        );
        assert!(matches!(
            matches("abc", "(", 16, "k"),
            Err(MatchError::Invalid(_))
        ));
    }
}
