//! Guest SDK for mofa-bus WASM plugins.
//!
//! Write a handler and export it:
//!
//! ```ignore
//! use mofa_guest::{export, Error, Value};
//!
//! fn handle(input: Value) -> Result<Value, Error> {
//!     let name = mofa_guest::field(&input, "name")
//!         .and_then(Value::as_str)
//!         .ok_or_else(|| Error::bad_input("name must be a string"))?;
//!     Ok(Value::from(format!("hello, {name}")))
//! }
//!
//! export!(handle);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` (crate type `cdylib`)
//! and put the module in the plugins directory as `<name>.wasm`. The macro exports the ABI
//! (`memory`, `mofa_alloc`, `mofa_handle`; see `plugins/wasm/ABI.md`). Host functions
//! ([`log`], [`now_ms`], [`config`], [`call_plugin`], [`matches`]) are imported only when used, and each
//! needs its capability in the plugin's manifest (`<name>.toml`).
//!
//! By default (feature `bump-alloc`) the SDK installs a bump allocator: a request runs in a
//! fresh instance, so nothing needs freeing, and allocating from the memory the module starts
//! with avoids growing memory on every request (growing costs the host a page-protection change).
//! Link with a small stack and some initial heap, as `plugins/wasm/.cargo/config.toml` does.

#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
mod bump;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use rmpv::Value;

/// Bit 63 of a packed result: the buffer is an error body.
const ERROR_FLAG: u64 = 1 << 63;

/// An error a handler returns: the worker replies with `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 400 for bad input, 500 for a failure (408, 413 and 503 pass through from
    /// [`call_plugin`]).
    pub code: u16,
    /// What went wrong, for the caller.
    pub message: String,
}

impl Error {
    /// A 400: the input was wrong.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }

    /// A 500: the plugin failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The value of `key` in a map input (string keys).
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Deserializes a value into `T`; failure is a 400 naming what did not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    rmpv::ext::from_value(value).map_err(|e| Error::bad_input(format!("invalid input: {e}")))
}

/// Serializes `T` into a value (structs become maps keyed by field name).
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, Error> {
    let bytes = rmp_serde::to_vec_named(value)
        .map_err(|e| Error::failed(format!("cannot encode output: {e}")))?;
    rmpv::decode::read_value(&mut bytes.as_slice())
        .map_err(|e| Error::failed(format!("cannot encode output: {e}")))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, value);
    buf
}

fn encode_error(error: &Error) -> Vec<u8> {
    encode(&Value::Map(vec![
        (Value::from("code"), Value::from(error.code)),
        (Value::from("message"), Value::from(error.message.as_str())),
    ]))
}

fn pack(bytes: Vec<u8>, error: bool) -> i64 {
    let (ptr, len) = (bytes.as_ptr() as u32 as u64, bytes.len() as u32 as u64);
    // Each request runs in a fresh instance: the buffer lives until the instance is dropped.
    std::mem::forget(bytes);
    let flag = if error { ERROR_FLAG } else { 0 };
    (flag | (ptr << 32) | len) as i64
}

fn unpack(raw: i64) -> (usize, usize, bool) {
    let raw = raw as u64;
    (
        ((raw & !ERROR_FLAG) >> 32) as usize,
        raw as u32 as usize,
        raw & ERROR_FLAG != 0,
    )
}

/// Taking a buffer the host wrote into memory from [`__alloc`].
fn take(ptr: usize, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the host wrote `len` bytes at `ptr`, a buffer it obtained from `mofa_alloc`
    // (a leaked Vec with capacity `len`).
    unsafe { Vec::from_raw_parts(ptr as *mut u8, len, len) }
}

#[doc(hidden)]
pub fn __alloc(len: i32) -> i32 {
    let mut buf = Vec::<u8>::with_capacity(len.max(0) as usize);
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr as i32
}

#[doc(hidden)]
pub fn __handle(ptr: i32, len: i32, handler: fn(Value) -> Result<Value, Error>) -> i64 {
    let input = take(ptr as usize, len as usize);
    let result = rmpv::decode::read_value(&mut input.as_slice())
        .map_err(|e| Error::bad_input(format!("input is not MessagePack: {e}")))
        .and_then(handler);
    match result {
        Ok(value) => pack(encode(&value), false),
        Err(error) => pack(encode_error(&error), true),
    }
}

/// Exports `handler` (a `fn(Value) -> Result<Value, Error>`) as this module's entry point,
/// together with the rest of the ABI.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[no_mangle]
        pub extern "C" fn mofa_alloc(len: i32) -> i32 {
            $crate::__alloc(len)
        }

        #[no_mangle]
        pub extern "C" fn mofa_handle(ptr: i32, len: i32) -> i64 {
            $crate::__handle(ptr, len, $handler)
        }
    };
}

#[link(wasm_import_module = "mofa")]
extern "C" {
    #[link_name = "log"]
    fn host_log(level: i32, ptr: i32, len: i32);
    #[link_name = "now"]
    fn host_now() -> i64;
    #[link_name = "get_config"]
    fn host_get_config(ptr: i32, len: i32) -> i64;
    #[link_name = "call_plugin"]
    fn host_call_plugin(name_ptr: i32, name_len: i32, in_ptr: i32, in_len: i32) -> i64;
    #[link_name = "matches"]
    fn host_matches(pattern_ptr: i32, pattern_len: i32, text_ptr: i32, text_len: i32) -> i64;
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// Writes to the worker's log. Needs capability `log`.
pub fn log(level: Level, message: &str) {
    // SAFETY: a host function reading `message.len()` bytes at `message.as_ptr()`.
    unsafe { host_log(level as i32, message.as_ptr() as i32, message.len() as i32) }
}

/// Unix time in milliseconds. Needs capability `now`.
pub fn now_ms() -> i64 {
    // SAFETY: a host function without arguments.
    unsafe { host_now() }
}

/// A value from the manifest's `[config]` table. Needs capability `get_config`.
pub fn config(key: &str) -> Option<Value> {
    // SAFETY: a host function reading the key; it returns a buffer from `mofa_alloc` or 0.
    let raw = unsafe { host_get_config(key.as_ptr() as i32, key.len() as i32) };
    if raw == 0 {
        return None;
    }
    let (ptr, len, _) = unpack(raw);
    rmpv::decode::read_value(&mut take(ptr, len).as_slice()).ok()
}

/// Calls another plugin by name (locally or over the bus). Needs capability `call_plugin`.
pub fn call_plugin(name: &str, input: &Value) -> Result<Value, Error> {
    let body = encode(input);
    // SAFETY: a host function reading both buffers; it returns a buffer from `mofa_alloc`.
    let raw = unsafe {
        host_call_plugin(
            name.as_ptr() as i32,
            name.len() as i32,
            body.as_ptr() as i32,
            body.len() as i32,
        )
    };
    let (ptr, len, error) = unpack(raw);
    let value = rmpv::decode::read_value(&mut take(ptr, len).as_slice())
        .map_err(|e| Error::failed(format!("call_plugin({name}): undecodable reply: {e}")))?;
    if !error {
        return Ok(value);
    }
    Err(error_from(&value))
}

/// Whether the regular expression `pattern` (Rust `regex` syntax) matches somewhere in
/// `text`. The host compiles a pattern once per sandbox thread and keeps it, so this costs a
/// match, not a compile, on every request. A pattern over the worker's `wasm.max_regex_bytes`
/// is a 413, an invalid one a 400. Needs capability `matches`.
pub fn matches(pattern: &str, text: &str) -> Result<bool, Error> {
    // SAFETY: a host function reading both buffers; it returns 0, 1 or an error buffer from
    // `mofa_alloc`.
    let raw = unsafe {
        host_matches(
            pattern.as_ptr() as i32,
            pattern.len() as i32,
            text.as_ptr() as i32,
            text.len() as i32,
        )
    };
    match raw {
        0 => Ok(false),
        1 => Ok(true),
        _ => {
            let (ptr, len, _) = unpack(raw);
            let body = rmpv::decode::read_value(&mut take(ptr, len).as_slice())
                .map_err(|e| Error::failed(format!("matches(): undecodable error: {e}")))?;
            Err(error_from(&body))
        }
    }
}

/// An error body (`{code, message}`) from the host as an [`Error`].
fn error_from(body: &Value) -> Error {
    let code = field(body, "code").and_then(Value::as_u64).unwrap_or(500) as u16;
    let message = field(body, "message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_string();
    Error { code, message }
}
