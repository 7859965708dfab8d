//! WebAssembly plugins: untrusted or polyglot code in a wasmtime sandbox.
//!
//! One [`WasmRuntime`] per worker: an `Engine` with the pooling instance allocator, fuel and
//! epoch interruption, a module cache keyed by the module's SHA-256, and a ticker thread that
//! advances the epoch while calls run. Each [`WasmPlugin`] is a module plus its manifest (`<name>.toml`); every
//! request runs in a **fresh instance** (from an `InstancePre`), so nothing leaks between
//! requests, with a memory cap, a fuel budget and a wall-clock deadline of its own, and only the
//! host functions its manifest grants (WASI preview 1 among them, as an optional grant). The ABI is documented in `plugins/wasm/ABI.md`.

mod abi;
mod config;
mod disk_cache;
mod host;
mod plugin;
mod runtime;
mod store;
mod wasi;

pub use abi::{ERROR_FLAG, EXPORT_ALLOC, EXPORT_HANDLE, EXPORT_MEMORY, HOST_MODULE};
pub use config::{Capability, Manifest, ManifestLimits, WasmConfig};
pub use plugin::WasmPlugin;
pub use runtime::WasmRuntime;
pub use wasi::WASI_MODULE;
