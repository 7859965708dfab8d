//! Rhai script plugins: a sandboxed engine and the plugins that run on it.
//!
//! A script is served in one of its shapes: an entry function (its parameters bound from the
//! input by count and name, see [`Shape`]), a tool ([`tool`]: a schema-checked entry an LLM can
//! call) or a rule set ([`rules`]). Every script can call the
//! standard library (`has_profanity`, `contains_any`, `matches`, `parse_json`, `to_json`).
//!
//! One [`ScriptEngine`] is built per worker from a [`RhaiConfig`] and shared by every script.
//! Each script is compiled once into an AST when its plugin loads; a call runs only the entry
//! function, never the top-level statements again. Calls run on the sandbox pool so a slow
//! script never stalls the async threads, and every call has a wall-clock deadline enforced from
//! inside the interpreter.

mod config;
mod convert;
mod engine;
mod plugin;
pub mod rules;
mod stdlib;
pub mod tool;

pub use config::RhaiConfig;
pub use convert::{from_dynamic, to_dynamic};
pub use engine::{Entry, ScriptEngine, Shape, StateMap};
pub use plugin::RhaiPlugin;
