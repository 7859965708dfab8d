//! The rows a statement returned, independent of the database, and their two reply forms:
//! MessagePack values (a list of maps) and JSON text (what a script feeds to `parse_json`).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::wire::Value;

/// One column value, already converted from the driver's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// Any floating-point type.
    Float(f64),
    /// Text, and types carried as text: dates, times, timestamps, UUIDs.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// An exact numeric (PostgreSQL NUMERIC) in decimal notation, every digit kept.
    Decimal(String),
    /// A JSON document (PostgreSQL json / jsonb).
    Json(serde_json::Value),
}

/// The result of one statement.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    /// Column names, in the statement's order.
    pub columns: Vec<String>,
    /// One entry per row, one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

impl Cell {
    fn into_value(self) -> Value {
        match self {
            Cell::Null => Value::Nil,
            Cell::Bool(b) => Value::Boolean(b),
            Cell::Int(i) => Value::from(i),
            Cell::Float(f) => Value::F64(f),
            Cell::Text(s) | Cell::Decimal(s) => Value::from(s),
            Cell::Bytes(b) => Value::Binary(b),
            Cell::Json(json) => crate::wire::from_json(&json),
        }
    }
}

impl Rows {
    /// The rows as a list of maps from column name to value. Exact numerics, dates and
    /// timestamps are strings, so no precision is lost on the way.
    pub fn into_value(self) -> Value {
        let columns: Vec<Value> = self.columns.into_iter().map(Value::from).collect();
        Value::Array(
            self.rows
                .into_iter()
                .map(|row| {
                    Value::Map(
                        columns
                            .iter()
                            .cloned()
                            .zip(row.into_iter().map(Cell::into_value))
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// The rows as a JSON array of objects. Exact numerics are JSON numbers written with all
    /// their digits; binary data is a string of hex digits after `\x` (PostgreSQL's own text
    /// form for bytea).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&JsonRows(self)).unwrap_or_else(|e| {
            // Serializing plain data into a String cannot fail; keep the reply well-formed if
            // it ever does.
            serde_json::json!({ "error": e.to_string() }).to_string()
        })
    }
}

struct JsonRows<'a>(&'a Rows);
struct JsonRow<'a>(&'a [String], &'a [Cell]);

impl Serialize for JsonRows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.rows.len()))?;
        for row in &self.0.rows {
            seq.serialize_element(&JsonRow(&self.0.columns, row))?;
        }
        seq.end()
    }
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (column, cell) in self.0.iter().zip(self.1) {
            map.serialize_key(column)?;
            match cell {
                Cell::Null => map.serialize_value(&())?,
                Cell::Bool(b) => map.serialize_value(b)?,
                Cell::Int(i) => map.serialize_value(i)?,
                Cell::Float(f) => map.serialize_value(f)?,
                Cell::Text(s) => map.serialize_value(s)?,
                Cell::Bytes(b) => map.serialize_value(&format!("\\x{}", hex::encode(b)))?,
                // NUMERIC's text is a valid JSON number, except NaN and the infinities.
                Cell::Decimal(s) => match serde_json::value::RawValue::from_string(s.clone()) {
                    Ok(number) => map.serialize_value(&number)?,
                    Err(_) => map.serialize_value(s)?,
                },
                Cell::Json(json) => map.serialize_value(json)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        Rows {
            columns: vec![
                "id".into(),
                "amount".into(),
                "note".into(),
                "raw".into(),
                "ok".into(),
            ],
            rows: vec![vec![
                Cell::Int(1),
                Cell::Decimal("12.50".into()),
                Cell::Null,
                Cell::Bytes(vec![0, 255]),
                Cell::Bool(true),
            ]],
        }
    }

    #[test]
    fn json_keeps_column_order_and_decimal_digits() {
        assert_eq!(
            sample().to_json(),
            r#"[{"id":1,"amount":12.50,"note":null,"raw":"\\x00ff","ok":true}]"#
        );
        let nan = Rows {
            columns: vec!["x".into()],
            rows: vec![vec![Cell::Decimal("NaN".into())]],
        };
        assert_eq!(nan.to_json(), r#"[{"x":"NaN"}]"#);
    }

    #[test]
    fn values_are_maps_with_decimals_as_text() {
        let Value::Array(rows) = sample().into_value() else {
            panic!("an array")
        };
        let Value::Map(row) = &rows[0] else {
            panic!("a map")
        };
        assert_eq!(row[0], (Value::from("id"), Value::from(1)));
        assert_eq!(row[1], (Value::from("amount"), Value::from("12.50")));
        assert_eq!(row[3], (Value::from("raw"), Value::Binary(vec![0, 255])));
    }
}
