//! What a guest can reach: the host functions, each defined in a module's linker only when its
//! manifest grants it (the per-call store data they read is in [`super::store`]).

use wasmtime::{bail, format_err};
use wasmtime::{Caller, Extern, Linker};

use super::abi::{Packed, EXPORT_ALLOC, EXPORT_MEMORY, HOST_MODULE};
use super::config::{Capability, Manifest};
use super::store::StoreData;
use crate::plugin::matcher::{self, MatchError};
use crate::plugin::{call_nested, PluginError, Value};
use crate::wire::{self, ErrorCode};

/// Defines one host function in a linker.
type AddHostFunction = fn(&mut Linker<StoreData>) -> wasmtime::Result<()>;

/// A linker holding exactly the host functions `manifest` grants.
pub(crate) fn linker(
    engine: &wasmtime::Engine,
    module: &wasmtime::Module,
    manifest: &Manifest,
) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    if manifest.wasi {
        super::wasi::add_to_linker(&mut linker, module)?;
    }
    let grants: [(Capability, AddHostFunction); 5] = [
        (Capability::Log, add_log),
        (Capability::Now, add_now),
        (Capability::GetConfig, add_get_config),
        (Capability::CallPlugin, add_call_plugin),
        (Capability::Matches, add_matches),
    ];
    for (capability, add) in grants {
        if manifest.grants(capability) {
            add(&mut linker)?;
        }
    }
    Ok(linker)
}

/// `log(level, ptr, len)`: a line in the worker's log, at the guest's level.
fn add_log(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        Capability::Log.as_str(),
        |mut caller: Caller<'_, StoreData>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            caller.data_mut().not_inline()?;
            let text = String::from_utf8_lossy(&read(&mut caller, ptr, len)?).into_owned();
            let plugin = caller.data().host.plugin.as_str();
            match level {
                0 => tracing::error!(target: "mofa::wasm", plugin, "{text}"),
                1 => tracing::warn!(target: "mofa::wasm", plugin, "{text}"),
                2 => tracing::info!(target: "mofa::wasm", plugin, "{text}"),
                3 => tracing::debug!(target: "mofa::wasm", plugin, "{text}"),
                _ => tracing::trace!(target: "mofa::wasm", plugin, "{text}"),
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// `now()`: Unix time in milliseconds.
fn add_now(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(HOST_MODULE, Capability::Now.as_str(), || -> i64 {
        wire::unix_ms() as i64
    })?;
    Ok(())
}

/// `get_config(ptr, len)`: the manifest's `[config]` value of a key, 0 when it has none.
fn add_get_config(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        Capability::GetConfig.as_str(),
        |mut caller: Caller<'_, StoreData>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
            let key = String::from_utf8(read(&mut caller, ptr, len)?)
                .map_err(|_| format_err!("get_config: key is not UTF-8"))?;
            let value = caller
                .data()
                .host
                .config
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            match value {
                Some(bytes) => write(&mut caller, &bytes, false),
                None => Ok(0),
            }
        },
    )?;
    Ok(())
}

/// `call_plugin(name, input)`: another plugin's output, or its error as an error value.
fn add_call_plugin(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        Capability::CallPlugin.as_str(),
        |mut caller: Caller<'_, StoreData>,
         name_ptr: i32,
         name_len: i32,
         in_ptr: i32,
         in_len: i32|
         -> wasmtime::Result<i64> {
            caller.data_mut().not_inline()?;
            let name = String::from_utf8(read(&mut caller, name_ptr, name_len)?)
                .map_err(|_| format_err!("call_plugin: plugin name is not UTF-8"))?;
            let input = wire::decode(&read(&mut caller, in_ptr, in_len)?);
            let result = match input {
                Ok(input) => call_plugin(caller.data(), &name, input),
                Err(e) => Err(PluginError::BadInput(format!("call_plugin({name}): {e}"))),
            };
            match result {
                Ok(output) => write(&mut caller, &wire::encode(&output), false),
                Err(e) => write(
                    &mut caller,
                    &wire::encode_error(e.code(), &e.to_string()),
                    true,
                ),
            }
        },
    )?;
    Ok(())
}

/// `matches(pattern, text)`: a regex match run (and its compiled pattern cached) in the host.
fn add_matches(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        Capability::Matches.as_str(),
        |mut caller: Caller<'_, StoreData>,
         pattern_ptr: i32,
         pattern_len: i32,
         text_ptr: i32,
         text_len: i32|
         -> wasmtime::Result<i64> {
            let max = caller.data().host.max_regex_bytes;
            let memory = memory(&mut caller)?;
            let data = memory.data(&caller);
            let pattern = std::str::from_utf8(slice(data, pattern_ptr, pattern_len)?);
            let text = std::str::from_utf8(slice(data, text_ptr, text_len)?);
            let result = match (pattern, text) {
                (Ok(pattern), Ok(text)) => {
                    matcher::matches(text, pattern, max, "wasm.max_regex_bytes").map_err(|e| {
                        let code = match e {
                            MatchError::TooLong { .. } => ErrorCode::LimitExceeded,
                            MatchError::Invalid(_) => ErrorCode::BadRequest,
                        };
                        (code, format!("matches(): {e}"))
                    })
                }
                _ => Err((
                    ErrorCode::BadRequest,
                    "matches(): pattern and text must be UTF-8".to_string(),
                )),
            };
            match result {
                Ok(found) => Ok(i64::from(found)),
                Err((code, message)) => {
                    write(&mut caller, &wire::encode_error(code, &message), true)
                }
            }
        },
    )?;
    Ok(())
}

/// Runs a nested call with the caller's remaining time and one more level of depth.
fn call_plugin(data: &StoreData, name: &str, input: Value) -> Result<Value, PluginError> {
    let (Some(caller), Some(runtime)) = (&data.host.caller, &data.host.runtime) else {
        return Err(PluginError::Unavailable(format!(
            "call_plugin({name}): no plugin caller is configured in this runtime"
        )));
    };
    call_nested(
        &data.host.pool,
        caller.as_ref(),
        runtime,
        name,
        || Ok(input),
        data.depth,
        data.deadline,
    )
}

/// The guest's exported memory.
fn memory(caller: &mut Caller<'_, StoreData>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export(EXPORT_MEMORY) {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("module does not export its memory as {EXPORT_MEMORY:?}"),
    }
}

/// A bounds-checked copy of `[ptr, ptr + len)` from guest memory.
fn read(caller: &mut Caller<'_, StoreData>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    slice(memory.data(&*caller), ptr, len).map(<[u8]>::to_vec)
}

/// `[ptr, ptr + len)` of guest memory, bounds-checked.
fn slice(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(start..start.saturating_add(len)).ok_or_else(|| {
        format_err!(
            "buffer [{start}, +{len}) is outside guest memory ({} bytes)",
            data.len()
        )
    })
}

/// Copies `bytes` into a fresh guest allocation and returns it packed.
fn write(caller: &mut Caller<'_, StoreData>, bytes: &[u8], error: bool) -> wasmtime::Result<i64> {
    let alloc = match caller.get_export(EXPORT_ALLOC) {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&*caller)?,
        _ => bail!("module does not export {EXPORT_ALLOC:?}"),
    };
    let len =
        i32::try_from(bytes.len()).map_err(|_| format_err!("buffer too large for the guest"))?;
    let ptr = alloc.call(&mut *caller, len)?;
    memory(caller)?
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| format_err!("{EXPORT_ALLOC} returned a buffer outside guest memory"))?;
    Ok(Packed {
        ptr: ptr as u32,
        len: len as u32,
        error,
    }
    .pack())
}
