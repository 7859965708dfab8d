//! `wordcount`: text statistics as a WASM plugin.
//!
//! Input `{text: string, top?: integer}`. Output `{words, lines, chars, bytes, top}` where
//! `top` lists the most frequent words (lowercased) as `[word, count]`, most frequent first,
//! ties in alphabetical order. How many: the input's `top`, else the manifest's
//! `[config] top` (read with the `get_config` capability), else 5.

use std::collections::HashMap;

use mofa_guest::{export, from_value, to_value, Error, Value};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    text: String,
    top: Option<usize>,
}

#[derive(Serialize)]
struct Output {
    words: usize,
    lines: usize,
    chars: usize,
    bytes: usize,
    top: Vec<(String, usize)>,
}

fn handle(input: Value) -> Result<Value, Error> {
    let input: Input = from_value(input)?;
    let top = match input.top {
        Some(n) => n,
        None => mofa_guest::config("top")
            .and_then(|v| v.as_u64())
            .map_or(5, |n| n as usize),
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for word in input
        .text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
    {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(top);
    to_value(&Output {
        words,
        lines: input.text.lines().count(),
        chars: input.text.chars().count(),
        bytes: input.text.len(),
        top: ranked,
    })
}

export!(handle);
