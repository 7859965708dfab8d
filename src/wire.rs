//! The wire format: what travels on the bus.
//!
//! A request body is one MessagePack value and a successful reply is one MessagePack value.
//! An error reply carries the NATS Services API headers (`Nats-Service-Error`,
//! `Nats-Service-Error-Code`) *and* a MessagePack body `{code, message}` so that clients that
//! only read bodies still see what went wrong. Events are MessagePack maps too (see
//! [`crate::events`]).
//! `subjects.md` is the public description of everything in this file.

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

/// Reply header naming the bucket revision of the plugin that answered (plugins distributed
/// over the bus only).
pub const HEADER_REVISION: &str = "Mofa-Revision";
/// Optional request header: a caller-chosen key (a customer id, say) that places the request
/// on one side of a canary by its hash, so one key always sees one variant.
pub const HEADER_ROUTE_KEY: &str = "Mofa-Route-Key";
/// Reply header set when a canary revision answered: `true`.
pub const HEADER_CANARY: &str = "Mofa-Canary";
/// Request header set on plugin-to-plugin calls over the bus: the depth of the call.
pub const HEADER_CALL_DEPTH: &str = "Mofa-Call-Depth";
/// Optional request header: when the caller stops waiting, in Unix milliseconds. A request
/// waits for a slot until then (at most `queue_wait_ms`), runs under the earlier of it and
/// the plugin's own timeout, and is not run at all once it has passed (408).
pub const HEADER_DEADLINE: &str = "Mofa-Deadline";

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

/// The `(code, message)` an error reply carries in its headers; `None` for a value reply.
pub fn reply_error(headers: Option<&async_nats::HeaderMap>) -> Option<(u16, String)> {
    let headers = headers?;
    let code = headers
        .get(HEADER_ERROR_CODE)?
        .as_str()
        .parse()
        .unwrap_or(500);
    let message = headers
        .get(HEADER_ERROR)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    Some((code, message))
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
///
/// Strict where MessagePack decoders are often lenient: the reserved byte `0xc1`, strings that
/// are not UTF-8, nesting deeper than [`MAX_DECODE_DEPTH`], truncation and trailing bytes are
/// all errors, never a silently different value.
///
/// Hand-written rather than `rmpv::decode::read_value` because that reader is lenient exactly
/// where a request must not be: it accepts strings that are not UTF-8 (keeping the bytes), and
/// it reads one value and leaves trailing bytes to the caller; and because this decoder's
/// nesting limit and error messages are part of the contract (subjects.md). Wherever both
/// accept a body they read the same value: `tests/properties.rs` and the `decode` fuzz target
/// (`fuzz/`) check that.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    if body.is_empty() {
        return Ok(Value::Nil);
    }
    let mut reader = Reader { buf: body, pos: 0 };
    let value = reader.value(MAX_DECODE_DEPTH)?;
    let rest = body.len() - reader.pos;
    if rest > 0 {
        return Err(DecodeError::Trailing(rest));
    }
    Ok(value)
}

/// A bounds-checked MessagePack reader over one body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                DecodeError::Invalid(format!(
                    "truncated: {n} bytes needed at offset {}, {} left",
                    self.pos,
                    self.buf.len() - self.pos
                ))
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len(&mut self, width: usize) -> Result<usize, DecodeError> {
        Ok(match width {
            1 => usize::from(self.be::<1>()?[0]),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn string(&mut self, len: usize) -> Result<Value, DecodeError> {
        let offset = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Value::from)
            .map_err(|_| DecodeError::Invalid(format!("string at offset {offset} is not UTF-8")))
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, DecodeError> {
        // Every element takes at least one byte: never reserve more than the body can hold.
        let mut items = Vec::with_capacity(len.min(self.buf.len() - self.pos));
        for _ in 0..len {
            items.push(self.value(depth - 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut entries = Vec::with_capacity(len.min((self.buf.len() - self.pos) / 2));
        for _ in 0..len {
            let key = self.value(depth - 1)?;
            entries.push((key, self.value(depth - 1)?));
        }
        Ok(Value::Map(entries))
    }

    fn ext(&mut self, len: usize) -> Result<Value, DecodeError> {
        let kind = self.be::<1>()?[0] as i8;
        Ok(Value::Ext(kind, self.take(len)?.to_vec()))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth == 0 {
            return Err(DecodeError::Invalid(format!(
                "nested deeper than {MAX_DECODE_DEPTH} levels"
            )));
        }
        let offset = self.pos;
        let marker = self.be::<1>()?[0];
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => self.string(usize::from(marker & 0x1f))?,
            0xc0 => Value::Nil,
            0xc1 => {
                return Err(DecodeError::Invalid(format!(
                    "reserved byte 0xc1 at offset {offset}"
                )))
            }
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xc4..=0xc6 => {
                let len = self.len(1 << (marker - 0xc4))?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.len(1 << (marker - 0xc7))?;
                self.ext(len)?
            }
            0xca => Value::F32(f32::from_be_bytes(self.be()?)),
            0xcb => Value::F64(f64::from_be_bytes(self.be()?)),
            0xcc => Value::from(self.be::<1>()?[0]),
            0xcd => Value::from(u16::from_be_bytes(self.be()?)),
            0xce => Value::from(u32::from_be_bytes(self.be()?)),
            0xcf => Value::from(u64::from_be_bytes(self.be()?)),
            0xd0 => Value::from(self.be::<1>()?[0] as i8),
            0xd1 => Value::from(i16::from_be_bytes(self.be()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.be()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => self.ext(1 << (marker - 0xd4))?,
            0xd9..=0xdb => {
                let len = self.len(1 << (marker - 0xd9))?;
                self.string(len)?
            }
            0xdc | 0xdd => {
                let len = self.len(if marker == 0xdc { 2 } else { 4 })?;
                self.array(len, depth)?
            }
            0xde | 0xdf => {
                let len = self.len(if marker == 0xde { 2 } else { 4 })?;
                self.map(len, depth)?
            }
            0xe0..=0xff => Value::from(marker as i8),
        })
    }
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
    // Room for a result event (about 200 bytes) from the start: growing from empty copies the
    // buffer five times on every request.
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut buf, value)?;
    Ok(Bytes::from(buf))
}

/// Encodes the body of an error reply.
pub fn encode_error(code: ErrorCode, message: &str) -> Bytes {
    let body = ErrorBody {
        code: code.as_u16(),
        message: message.to_string(),
    };
    encode_named(&body).unwrap_or_default()
}

/// A short name for a value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "integer",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
}

/// Longest error message a reply, event or dead letter carries (in a header and again in the
/// body), so an error always fits the server's `max_payload`.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// `text` cut to [`MAX_ERROR_MESSAGE`] bytes (on a character boundary), saying how much was cut.
pub fn bounded_message(text: String) -> String {
    if text.len() <= MAX_ERROR_MESSAGE {
        return text;
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end)
}

/// `text` fit for a header value: header values cannot hold line breaks.
pub fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
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
                        Value::String(s) => {
                            s.as_str().map_or_else(|| k.to_string(), str::to_string)
                        }
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
    fn every_marker_width_decodes_like_rmpv_encodes() {
        let values = [
            Value::from(0x7f),
            Value::from(200),
            Value::from(60_000),
            Value::from(4_000_000_000u64),
            Value::from(-1),
            Value::from(-100),
            Value::from(-30_000),
            Value::from(-2_000_000_000),
            Value::from(i64::MIN),
            Value::F32(1.25),
            Value::from("x".repeat(31)),
            Value::from("x".repeat(200)),
            Value::from("x".repeat(70_000)),
            Value::Binary(vec![7; 300]),
            Value::Binary(vec![7; 70_000]),
            Value::Array(vec![Value::Nil; 20]),
            Value::Array(vec![Value::Nil; 70_000]),
            Value::Map((0..20).map(|i| (Value::from(i), Value::Nil)).collect()),
            Value::Map((0..70_000).map(|i| (Value::from(i), Value::Nil)).collect()),
            Value::Ext(-1, vec![1; 4]),
            Value::Ext(3, vec![1; 3]),
            Value::Ext(3, vec![1; 300]),
        ];
        for value in values {
            assert_eq!(decode(&encode(&value)).expect("decodes"), value);
        }
    }

    #[test]
    fn reserved_byte_and_bad_utf8_are_rejected() {
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Invalid(_))));
        assert!(matches!(
            decode(&[0x91, 0xc1]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&[0xa2, 0xff, 0xfe]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn empty_body_is_nil() {
        assert_eq!(decode(b"").expect("decodes"), Value::Nil);
    }

    #[test]
    fn truncated_and_trailing_bodies_are_rejected() {
        assert!(matches!(
            decode(&[0x92, 0x01]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&[0x01, 0x02]),
            Err(DecodeError::Trailing(1))
        ));
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
