//! Property tests of the wire codec: every value survives encode then decode, and on arbitrary
//! bytes the worker's decoder agrees with `rmpv` wherever both accept the input (the decoder is
//! stricter on purpose: see `mofa_bus::wire::decode`).

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
}
