//! The wire format: what travels on the bus.
//!
//! A request body is one MessagePack value and a successful reply is one MessagePack value.
//! An error reply carries the NATS Services API headers (`Nats-Service-Error`,
//! `Nats-Service-Error-Code`) *and* a MessagePack body `{code, message}` so that clients that
//! only read bodies still see what went wrong. Result events are MessagePack maps too.
//! `subjects.md` is the public description of everything in this file.

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A dynamic value: what plugins take and return. It round-trips MessagePack exactly
/// (maps with any keys, arrays, strings, integers up to `u64`, floats, bools, nil, binary, ext).
pub type Value = rmpv::Value;

/// Header carrying the error message of an error reply (NATS Services API).
pub const HEADER_ERROR: &str = "Nats-Service-Error";
/// Header carrying the numeric error code of an error reply (NATS Services API).
pub const HEADER_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Optional request header: a caller-chosen id, echoed into the result event.
pub const HEADER_REQUEST_ID: &str = "Mofa-Request-Id";

/// Deepest nesting accepted in a request body; deeper bodies are rejected with 400 rather than
/// risking the decoder's stack.
pub const MAX_DECODE_DEPTH: usize = 256;

/// The error codes a reply can carry. They follow HTTP semantics, as the Services API suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum ErrorCode {
    /// 400: the body is not one MessagePack value, or the plugin rejected the input.
    BadRequest,
    /// 408: the per-call wall-clock deadline passed.
    Timeout,
    /// 413: a size or operation limit tripped (operations, call depth, string/array/map size).
    LimitExceeded,
    /// 500: the plugin failed (script error, `throw`, panic, bad output).
    Internal,
    /// 503: the plugin is saturated (concurrency limit) or not running.
    Unavailable,
}

impl ErrorCode {
    /// The numeric code, as sent in `Nats-Service-Error-Code`.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Timeout => 408,
            ErrorCode::LimitExceeded => 413,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        Ok(match code {
            400 => ErrorCode::BadRequest,
            408 => ErrorCode::Timeout,
            413 => ErrorCode::LimitExceeded,
            500 => ErrorCode::Internal,
            503 => ErrorCode::Unavailable,
            other => return Err(format!("unknown error code {other}")),
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// The MessagePack body of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Numeric code (400, 408, 413, 500, 503).
    pub code: u16,
    /// Human-readable message; for scripts, the script's own error text.
    pub message: String,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a MessagePack value.
    #[error("body is not valid MessagePack: {0}")]
    Invalid(String),
    /// One value was decoded but bytes were left over.
    #[error("body holds more than one MessagePack value ({0} trailing bytes)")]
    Trailing(usize),
}

/// Decodes a request body. An empty body is `nil`, so `nats req mofa.exec.echo ""` works.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    if body.is_empty() {
        return Ok(Value::Nil);
    }
    let mut cursor = Cursor::new(body);
    let value = rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DECODE_DEPTH)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let rest = body.len() - cursor.position() as usize;
    if rest > 0 {
        return Err(DecodeError::Trailing(rest));
    }
    Ok(value)
}

/// Encodes a value as MessagePack.
pub fn encode(value: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, value);
    Bytes::from(buf)
}

/// Encodes any serde value as a MessagePack map (struct fields by name).
pub fn encode_named<T: Serialize>(value: &T) -> Result<Bytes, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value).map(Bytes::from)
}

/// Encodes the body of an error reply.
pub fn encode_error(code: ErrorCode, message: &str) -> Bytes {
    let body = ErrorBody {
        code: code.as_u16(),
        message: message.to_string(),
    };
    encode_named(&body).unwrap_or_default()
}

/// A result event, published on `mofa.events.result.<plugin>` after every execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultEvent {
    /// Always `"result"`, so a subscriber to `mofa.events.>` can tell event kinds apart.
    pub event: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin kind: `native`, `rhai` or `wasm`.
    pub kind: String,
    /// Id of the worker that executed the request.
    pub worker: String,
    /// The caller's `Mofa-Request-Id` header, or an id the worker generated.
    pub request_id: String,
    /// Whether the plugin returned a value.
    pub ok: bool,
    /// Error code when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Error message when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Execution time in microseconds (decode, execute, encode).
    pub duration_us: u64,
    /// Unix time in milliseconds when the execution finished.
    pub timestamp_ms: u64,
    /// The output, unless the worker is configured not to include it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Converts JSON (CLI input) to a value. Integers stay integers.
pub fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

/// Converts a value to JSON for display. JSON has no binary type: binary becomes an array of
/// bytes; ext values become `{"ext": type, "data": [bytes]}`; non-string map keys are written in
/// their display form.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(v) = i.as_i64() {
                J::from(v)
            } else if let Some(v) = i.as_u64() {
                J::from(v)
            } else {
                J::Null
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().map_or_else(
            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
            str::to_string,
        )),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.as_str().map_or_else(|| k.to_string(), str::to_string),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(t, data) => serde_json::json!({ "ext": t, "data": data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_msgpack_type_round_trips() {
        let value = Value::Map(vec![
            (Value::from("s"), Value::from("text")),
            (Value::from(1), Value::from(u64::MAX)),
            (Value::from("neg"), Value::from(-5)),
            (Value::from("f"), Value::F64(1.5)),
            (Value::from("b"), Value::Boolean(true)),
            (Value::from("n"), Value::Nil),
            (Value::from("bin"), Value::Binary(vec![0, 1, 255])),
            (Value::from("arr"), Value::Array(vec![Value::from(1)])),
            (Value::from("ext"), Value::Ext(7, vec![1, 2])),
        ]);
        let bytes = encode(&value);
        assert_eq!(decode(&bytes).expect("decodes"), value);
    }

    #[test]
    fn empty_body_is_nil() {
        assert_eq!(decode(b"").expect("decodes"), Value::Nil);
    }

    #[test]
    fn truncated_and_trailing_bodies_are_rejected() {
        assert!(matches!(decode(&[0x92, 0x01]), Err(DecodeError::Invalid(_))));
        assert!(matches!(decode(&[0x01, 0x02]), Err(DecodeError::Trailing(1))));
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let body = vec![0x91u8; 100_000];
        assert!(matches!(decode(&body), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn error_body_is_a_named_map() {
        let bytes = encode_error(ErrorCode::Timeout, "deadline");
        let value = decode(&bytes).expect("decodes");
        assert_eq!(value["code"], Value::from(408));
        assert_eq!(value["message"], Value::from("deadline"));
    }
}
