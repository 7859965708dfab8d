//! The Rhai sandbox limits. Every field is enforced, and each has a test that trips it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default word list of `has_profanity`: common English profanity. Set
/// `rhai.profanity` to replace it.
pub const DEFAULT_PROFANITY: [&str; 12] = [
    "arse", "asshole", "bastard", "bitch", "bollocks", "crap", "damn", "dick", "fuck", "fucking",
    "shit", "wanker",
];

/// Limits for every Rhai script on a worker. `0` means unlimited for the counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RhaiConfig {
    /// Operations one call may perform (413 when exceeded).
    pub max_operations: u64,
    /// Function-call nesting depth (413 when exceeded).
    pub max_call_levels: usize,
    /// Length of any string, in bytes (413).
    pub max_string_size: usize,
    /// Elements in any array (413).
    pub max_array_size: usize,
    /// Entries in any object map (413).
    pub max_map_size: usize,
    /// Expression nesting depth at compile time; deeper scripts fail to load.
    pub max_expr_depth: usize,
    /// Expression nesting depth inside functions at compile time.
    pub max_fn_expr_depth: usize,
    /// Wall-clock deadline per call, in milliseconds (408 when exceeded).
    pub timeout_ms: u64,
    /// Longest pattern `matches(text, pattern)` compiles, in bytes (413 when exceeded).
    pub max_regex_bytes: usize,
    /// The words `has_profanity(text)` looks for (whole words, case-insensitive).
    pub profanity: Vec<String>,
    /// Start short calls on the thread that received the request (see
    /// `crate::plugin::InlineGate`); off: every call is handed to a sandbox thread.
    pub inline: bool,
}

impl Default for RhaiConfig {
    fn default() -> Self {
        Self {
            max_operations: 1_000_000,
            max_call_levels: 64,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_expr_depth: 64,
            max_fn_expr_depth: 32,
            timeout_ms: 1_000,
            max_regex_bytes: 1024,
            profanity: DEFAULT_PROFANITY.iter().map(|w| w.to_string()).collect(),
            inline: true,
        }
    }
}

impl RhaiConfig {
    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
