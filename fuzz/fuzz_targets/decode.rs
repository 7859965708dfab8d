//! The request decoder on arbitrary bytes: it never panics; whatever it accepts re-encodes to
//! a body it decodes the same way; and where `rmpv` also reads exactly one value from the same
//! bytes, both read the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mofa_bus::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(ours) = wire::decode(data) else {
        return;
    };
    // Compared as encodings: a NaN float is never equal to itself as a value.
    let encoded = wire::encode(&ours);
    let again = wire::decode(&encoded).expect("what the decoder accepted re-encodes decodably");
    assert_eq!(wire::encode(&again), encoded);
    let mut rest = data;
    if let Ok(theirs) = rmpv::decode::read_value(&mut rest) {
        if rest.is_empty() && !data.is_empty() {
            assert_eq!(
                wire::encode(&theirs),
                encoded,
                "rmpv reads {data:?} differently"
            );
        }
    }
});
