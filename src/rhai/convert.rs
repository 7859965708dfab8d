//! Conversion between wire values and Rhai `Dynamic`s.
//!
//! Maps become object maps (string keys; integer and bool keys are written as text), binary
//! becomes a BLOB, integers are Rhai's `i64`. Values Rhai cannot hold faithfully (integers above
//! `i64::MAX`, ext types, non-UTF-8 strings, maps keyed by containers) are refused with a 400
//! instead of being changed silently.

use rhai::{Array, Blob, Dynamic, ImmutableString, Map};

use crate::plugin::{PluginError, Value};

/// Wire value → script value.
pub fn to_dynamic(value: Value) -> Result<Dynamic, PluginError> {
    Ok(match value {
        Value::Nil => Dynamic::UNIT,
        Value::Boolean(b) => Dynamic::from_bool(b),
        Value::Integer(i) => match i.as_i64() {
            Some(v) => Dynamic::from_int(v),
            None => {
                return Err(PluginError::BadInput(format!(
                    "integer {i} does not fit a script's 64-bit signed integers"
                )))
            }
        },
        Value::F32(f) => Dynamic::from_float(f64::from(f)),
        Value::F64(f) => Dynamic::from_float(f),
        Value::String(s) => match s.into_str() {
            Some(s) => Dynamic::from(ImmutableString::from(s)),
            None => return Err(PluginError::BadInput("string is not valid UTF-8".into())),
        },
        Value::Binary(b) => Dynamic::from_blob(b),
        Value::Array(items) => {
            let array: Array = items
                .into_iter()
                .map(to_dynamic)
                .collect::<Result<_, _>>()?;
            Dynamic::from_array(array)
        }
        Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => s.into_str().ok_or_else(|| {
                        PluginError::BadInput("map key is not valid UTF-8".into())
                    })?,
                    Value::Integer(i) => i.to_string(),
                    Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(PluginError::BadInput(format!(
                            "map keys must be strings, integers or bools, got {}",
                            crate::wire::type_name(&other)
                        )))
                    }
                };
                map.insert(key.into(), to_dynamic(v)?);
            }
            Dynamic::from_map(map)
        }
        Value::Ext(t, _) => {
            return Err(PluginError::BadInput(format!(
                "MessagePack ext type {t} has no script equivalent"
            )))
        }
    })
}

/// Script value → wire value. A value with no wire form (a function pointer, a custom type)
/// is a plugin error.
pub fn from_dynamic(value: Dynamic) -> Result<Value, PluginError> {
    let value = value.flatten();
    if value.is_unit() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Boolean(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Value::F64(f));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::from(c.to_string()));
    }
    if value.is_string() {
        let s = value
            .into_immutable_string()
            .map_err(|t| PluginError::Failed(format!("cannot read {t} as a string")))?;
        return Ok(Value::from(s.as_str()));
    }
    if value.is_blob() {
        return Ok(Value::Binary(value.cast::<Blob>()));
    }
    if value.is_array() {
        let array = value.cast::<Array>();
        return Ok(Value::Array(
            array
                .into_iter()
                .map(from_dynamic)
                .collect::<Result<_, _>>()?,
        ));
    }
    if value.is_map() {
        let map = value.cast::<Map>();
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            entries.push((Value::from(k.as_str()), from_dynamic(v)?));
        }
        return Ok(Value::Map(entries));
    }
    Err(PluginError::Failed(format!(
        "script returned a value of type {} which has no MessagePack form",
        value.type_name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_dynamic() {
        let value = Value::Map(vec![
            (
                Value::from("a"),
                Value::Array(vec![Value::from(1), Value::F64(2.5)]),
            ),
            (Value::from("b"), Value::Binary(vec![1, 2])),
            (Value::from("c"), Value::Nil),
            (Value::from("d"), Value::Boolean(false)),
            (Value::from("e"), Value::from("text")),
        ]);
        let back = from_dynamic(to_dynamic(value.clone()).expect("to")).expect("from");
        assert_eq!(back, value);
    }

    #[test]
    fn values_without_a_script_form_are_bad_input() {
        for v in [
            Value::from(u64::MAX),
            Value::Ext(1, vec![]),
            Value::Map(vec![(Value::Array(vec![]), Value::Nil)]),
        ] {
            assert_eq!(to_dynamic(v).unwrap_err().code().as_u16(), 400);
        }
    }
}
