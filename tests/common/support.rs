//! Things several test files build: a cached Python venv, the MCP client of the official
//! Python SDK, and a WAT module for the ABI.

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

/// The pinned Python MCP SDK, installed once into the cache.
const MCP_SDK: &str = "mcp==2.3.0";

/// `tests/support/mcp_client.py` (an MCP client written with the official SDK), run by the
/// venv's Python; add `MOFA_BINARY NATS_URL [slow]`.
pub async fn mcp_client() -> std::process::Command {
    let python = tokio::task::spawn_blocking(|| {
        let venv =
            mofa_bus::pyvenv::Venv::new(&format!("py-{}", MCP_SDK.replace("==", "")), &[MCP_SDK]);
        match venv.ensure() {
            Ok(_) => venv.bin("python"),
            Err(e) => panic!("the MCP tests need the Python MCP SDK: {e}"),
        }
    })
    .await
    .expect("venv");
    let mut command = std::process::Command::new(python);
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mcp_client.py"));
    command
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
