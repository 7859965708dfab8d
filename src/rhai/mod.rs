//! Rhai script plugins: a sandboxed engine and the plugins that run on it.
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

pub use config::RhaiConfig;
pub use convert::{from_dynamic, to_dynamic};
pub use engine::{Entry, ScriptEngine, StateMap};
pub use plugin::RhaiPlugin;
