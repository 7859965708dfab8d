//! `discount_native`: the discount rule in Rust.
//!
//! Input `{price, customer_tier}`; gold pays 80%, silver 90%, any other tier the full price.
//! The output is the price to pay, as a float. A missing or mistyped field is a 400.

use async_trait::async_trait;

use super::{field, type_name};
use crate::plugin::{AgentPlugin, PluginError, PluginKind, PluginMetadata, Value};

/// The discount rule, compiled in.
#[derive(Debug)]
pub struct DiscountNative {
    meta: PluginMetadata,
}

impl DiscountNative {
    /// The plugin, named `discount_native`.
    pub fn new() -> Self {
        Self {
            meta: PluginMetadata::new("discount_native", PluginKind::Native)
                .version(env!("CARGO_PKG_VERSION"))
                .description("Tiered discount: gold x0.8, silver x0.9")
                .capability("pricing"),
        }
    }
}

impl Default for DiscountNative {
    fn default() -> Self {
        Self::new()
    }
}

/// The rule itself: the price a customer of `tier` pays.
pub fn discounted_price(price: f64, tier: &str) -> f64 {
    match tier {
        "gold" => price * 0.8,
        "silver" => price * 0.9,
        _ => price,
    }
}

/// Applies the rule to a request value.
pub fn apply(input: &Value) -> Result<Value, PluginError> {
    let price = match field(input, "price")? {
        Value::Integer(i) => i
            .as_f64()
            .ok_or_else(|| PluginError::BadInput("price is out of range".into()))?,
        Value::F64(f) => *f,
        Value::F32(f) => f64::from(*f),
        other => {
            return Err(PluginError::BadInput(format!(
                "price must be a number, got {}",
                type_name(other)
            )))
        }
    };
    if !price.is_finite() || price < 0.0 {
        return Err(PluginError::BadInput(format!(
            "price must be a finite number >= 0, got {price}"
        )));
    }
    let tier = match field(input, "customer_tier")? {
        Value::String(s) => s
            .as_str()
            .ok_or_else(|| PluginError::BadInput("customer_tier is not valid UTF-8".into()))?,
        other => {
            return Err(PluginError::BadInput(format!(
                "customer_tier must be a string, got {}",
                type_name(other)
            )))
        }
    };
    Ok(Value::F64(discounted_price(price, tier)))
}

#[async_trait]
impl AgentPlugin for DiscountNative {
    fn metadata(&self) -> &PluginMetadata {
        &self.meta
    }

    async fn execute(&self, input: Value) -> Result<Value, PluginError> {
        apply(&input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(price: Value, tier: Value) -> Value {
        Value::Map(vec![
            (Value::from("price"), price),
            (Value::from("customer_tier"), tier),
        ])
    }

    #[test]
    fn tiers_are_discounted() {
        assert_eq!(
            apply(&req(Value::from(100), Value::from("gold"))),
            Ok(Value::F64(80.0))
        );
        assert_eq!(
            apply(&req(Value::F64(100.0), Value::from("silver"))),
            Ok(Value::F64(90.0))
        );
        assert_eq!(
            apply(&req(Value::from(100), Value::from("bronze"))),
            Ok(Value::F64(100.0))
        );
    }

    #[test]
    fn missing_or_mistyped_fields_are_bad_input() {
        let missing = Value::Map(vec![(Value::from("price"), Value::from(1))]);
        for input in [
            missing,
            req(Value::from("100"), Value::from("gold")),
            req(Value::from(100), Value::from(1)),
            req(Value::from(-1), Value::from("gold")),
            Value::from(5),
        ] {
            let err = apply(&input).unwrap_err();
            assert_eq!(err.code().as_u16(), 400, "{input}: {err}");
        }
    }
}
