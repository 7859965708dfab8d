//! Property tests of the wire codec: every value survives encode then decode, and on arbitrary
//! bytes the worker's decoder agrees with `rmpv` wherever both accept the input (the decoder is
//! stricter on purpose: see `mofa_bus::wire::decode`). And of the conversion to Rhai values:
//! what a script can hold comes back unchanged, anything else is a 400, never a panic.

use mofa_bus::wire::{self, Value};
use proptest::prelude::*;

/// Any MessagePack value, a few levels deep, with finite floats (NaN is never equal to itself).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::F64),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::F32),
        ".{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(kind, data)| Value::Ext(kind, data)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

/// Values a script holds faithfully: i64 integers, f64 floats, UTF-8 strings, and maps with
/// string keys in sorted order (Rhai maps are ordered by key).
fn script_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::F64),
        ".{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,8}", inner, 0..8).prop_map(|m| {
                Value::Map(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_the_value(v in value()) {
        let encoded = wire::encode(&v);
        prop_assert_eq!(wire::decode(&encoded).expect("decodes"), v);
    }

    #[test]
    fn where_both_accept_bytes_they_agree_with_rmpv(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
        let ours = wire::decode(&bytes);
        let mut reader = &bytes[..];
        let theirs = rmpv::decode::read_value(&mut reader);
        if let (Ok(ours), Ok(theirs)) = (&ours, &theirs) {
            // rmpv reads one value; ours refuses trailing bytes, so agreeing inputs have none.
            prop_assert!(reader.is_empty());
            prop_assert_eq!(ours, theirs);
        }
        // Whatever the input, the decoder answers (no panic) — reaching here is the check.
    }

    #[test]
    fn valid_values_with_trailing_bytes_are_refused(v in value(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = wire::encode(&v).to_vec();
        bytes.extend_from_slice(&extra);
        prop_assert!(wire::decode(&bytes).is_err());
    }

    #[test]
    fn script_values_convert_to_rhai_and_back_unchanged(v in script_value()) {
        let dynamic = mofa_bus::rhai::to_dynamic(v.clone()).expect("a script holds it");
        prop_assert_eq!(mofa_bus::rhai::from_dynamic(dynamic).expect("converts back"), v);
    }

    #[test]
    fn any_value_converts_to_rhai_or_is_a_400(v in value()) {
        if let Err(e) = mofa_bus::rhai::to_dynamic(v) {
            prop_assert_eq!(e.code().as_u16(), 400, "{}", e);
        }
    }
}
