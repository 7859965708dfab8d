//! `hello_wasi`: a guest built for `wasm32-wasip1`, the target most toolchains default to,
//! using Rust's standard library as any program would: the clock through `std::time`, random
//! bytes through `HashMap`'s seed, and `println!`/`eprintln!`, which reach the worker's log.
//! It loads only with `wasi = true` in `hello_wasi.toml`.
//!
//! Input `{name}`; output `{greeting, unix_ms, random}`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use mofa_guest::{export, field, Error, Value};

fn handle(input: Value) -> Result<Value, Error> {
    let name = match field(&input, "name") {
        Some(Value::String(s)) => s
            .as_str()
            .ok_or_else(|| Error::bad_input("name is not valid UTF-8"))?
            .to_string(),
        Some(_) => return Err(Error::bad_input("name must be a string")),
        None => "world".to_string(),
    };
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::failed(format!("clock before 1970: {e}")))?
        .as_millis() as u64;
    // A fresh RandomState is seeded from WASI's random_get.
    let random = RandomState::new().hash_one(&name);
    println!("hello_wasi greeted {name}");
    eprintln!("hello_wasi: this line goes to the worker's log as stderr");
    Ok(Value::Map(vec![
        (
            Value::from("greeting"),
            Value::from(format!("hello, {name}")),
        ),
        (Value::from("unix_ms"), Value::from(unix_ms)),
        (Value::from("random"), Value::from(random)),
    ]))
}

export!(handle);
