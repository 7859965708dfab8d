//! `discount_wasm`: the tiered discount rule as a WASM plugin.
//!
//! Input `{price, customer_tier}`; gold pays 80%, silver 90%, any other tier the full price.
//! The output is the price to pay, as a float. A missing or mistyped field is a 400.

use mofa_guest::{export, field, Error, Value};

fn handle(input: Value) -> Result<Value, Error> {
    let price = match field(&input, "price") {
        Some(Value::Integer(i)) => i
            .as_f64()
            .ok_or_else(|| Error::bad_input("price is out of range"))?,
        Some(Value::F64(f)) => *f,
        Some(Value::F32(f)) => f64::from(*f),
        Some(_) => return Err(Error::bad_input("price must be a number")),
        None => return Err(Error::bad_input("missing field \"price\"")),
    };
    if !price.is_finite() || price < 0.0 {
        return Err(Error::bad_input("price must be a finite number >= 0"));
    }
    let tier = match field(&input, "customer_tier") {
        Some(Value::String(s)) => s
            .as_str()
            .ok_or_else(|| Error::bad_input("customer_tier is not valid UTF-8"))?,
        Some(_) => return Err(Error::bad_input("customer_tier must be a string")),
        None => return Err(Error::bad_input("missing field \"customer_tier\"")),
    };
    let factor = match tier {
        "gold" => 0.8,
        "silver" => 0.9,
        _ => 1.0,
    };
    Ok(Value::F64(price * factor))
}

export!(handle);
