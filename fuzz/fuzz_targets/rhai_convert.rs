//! The conversion of request values to Rhai values and back, on whatever the decoder accepts:
//! never a panic, a refusal is a 400, and a converted value converts back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mofa_bus::rhai::{from_dynamic, to_dynamic};
use mofa_bus::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = wire::decode(data) else {
        return;
    };
    match to_dynamic(value) {
        Ok(dynamic) => {
            from_dynamic(dynamic).expect("a value a script holds converts back");
        }
        Err(e) => assert_eq!(e.code().as_u16(), 400, "{e}"),
    }
});
