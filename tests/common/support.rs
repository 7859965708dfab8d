//! Things several test files build: a cached Python venv and a WAT module for the ABI.

use std::path::{Path, PathBuf};

/// The python of a cached venv named `name` with the packages pinned in `requirements` (a
/// file), installed once per machine; `what` names the tests that need them, for the panic
/// when they cannot be installed.
pub fn python_venv(name: &str, requirements: &Path, what: &str) -> PathBuf {
    let text = std::fs::read_to_string(requirements)
        .unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let venv = mofa_bus::pyvenv::Venv::for_requirements(name, &text);
    if let Err(e) = venv.ensure() {
        panic!("{what} need their Python packages: {e}");
    }
    venv.bin("python")
}

/// A WAT module implementing the ABI with a bump allocator; `handle` is the body of
/// `mofa_handle(ptr, len) -> i64`, `extra` more module fields (imports first).
pub fn wat_module(handle: &str, extra: &str) -> String {
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "mofa_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $p))
  (func (export "mofa_handle") (param $ptr i32) (param $len i32) (result i64)
    {handle}))"#
    )
}
