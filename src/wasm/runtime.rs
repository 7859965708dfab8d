//! The wasmtime runtime shared by every module on a worker.
//!
//! Built once: an `Engine` with the pooling instance allocator (instances come from
//! preallocated slots, so a fresh instance per request costs microseconds), fuel metering and
//! epoch interruption, plus a ticker thread advancing the epoch every millisecond while any call
//! runs, so each call's deadline is enforced inside running wasm (and an idle worker is not
//! woken a thousand times a second). Compiled modules are cached by SHA-256: the same
//! bytes are compiled once, and different bytes can never be served from the cache; with a
//! disk cache ([`super::disk_cache`]) once per machine rather than once per start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, Instance, InstanceAllocationStrategy, InstancePre, Module,
    ModuleExport, PoolingAllocationConfig, Store, Trap, ValType,
};

use super::abi::{Packed, EXPORT_ALLOC, EXPORT_HANDLE, EXPORT_MEMORY, HOST_MODULE};
use super::config::{Capability, Limits, Manifest, WasmConfig};
use super::disk_cache::DiskCache;
use super::host;
use super::store::{HostContext, MemoryCap, StoreData};
use super::wasi::{self, WASI_MODULE};
use crate::plugin::{InlineCall, PluginCaller, PluginError, SandboxPool, Value};
use crate::wire::{self, ErrorBody};

/// How often the epoch advances; deadlines are enforced to this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What a WASI reactor (a module built as a library for `wasm32-wasip1`) exports to run its
/// constructors before any other export is called.
const EXPORT_INITIALIZE: &str = "_initialize";

/// Fuel a call may use inline (see [`WasmRuntime::try_inline`]) before it moves to the
/// sandbox pool: about 200 µs of tight guest code (a tight loop burns about 9,000 fuel per µs;
/// code that calls and touches memory burns less), like Rhai's `INLINE_LIMIT`, and far above a
/// short rule (the discount module uses a few thousand).
pub const INLINE_FUEL: u64 = 2_000_000;

/// Fuel past which an inline call that finished counts as long for its plugin's
/// [`crate::plugin::InlineGate`]: about 50 µs of tight guest code, more of code that touches
/// memory.
pub const SHORT_FUEL: u64 = 500_000;

/// Bytes of each instance's memory and tables kept resident between requests.
const KEEP_RESIDENT: usize = 2 << 20;

/// A module ready to instantiate, with everything a call needs.
pub(crate) struct Loaded {
    pub(crate) pre: InstancePre<StoreData>,
    pub(crate) sha256: String,
    pub(crate) limits: Limits,
    pub(crate) host: Arc<HostContext>,
    /// The ABI's exports, found once at load.
    exports: AbiExports,
    /// The module uses WASI (its output streams reach the worker's log): its calls never run
    /// inline, where a call stopped and run again would log twice.
    pub(crate) wasi: bool,
}

/// The exports a request uses, looked up by name once when the module loads: an instance
/// hands them out by index, where a lookup by name hashes the name on every request.
struct AbiExports {
    alloc: ModuleExport,
    handle: ModuleExport,
    memory: ModuleExport,
    /// A WASI reactor's `_initialize`, run before each request.
    initialize: Option<ModuleExport>,
}

impl AbiExports {
    /// The exports of `module`, which [`check_exports`] has checked.
    fn of(name: &str, module: &Module, wasi: bool) -> Result<AbiExports, PluginError> {
        let find = |export: &str| {
            module.get_export_index(export).ok_or_else(|| {
                PluginError::Load(format!(
                    "{name}: does not export {export:?} (see plugins/wasm/ABI.md)"
                ))
            })
        };
        let initialize = wasi
            && matches!(
                module.get_export(EXPORT_INITIALIZE),
                Some(ExternType::Func(_))
            );
        Ok(AbiExports {
            alloc: find(EXPORT_ALLOC)?,
            handle: find(EXPORT_HANDLE)?,
            memory: find(EXPORT_MEMORY)?,
            initialize: initialize.then(|| find(EXPORT_INITIALIZE)).transpose()?,
        })
    }

    /// The function `export` of `instance`, typed.
    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        instance: &Instance,
        store: &mut Store<StoreData>,
        export: &ModuleExport,
    ) -> wasmtime::Result<wasmtime::TypedFunc<P, R>> {
        instance
            .get_module_export(&mut *store, export)
            .and_then(wasmtime::Extern::into_func)
            .ok_or_else(|| wasmtime::format_err!("an ABI export is not a function"))?
            .typed(&*store)
    }
}

/// Compiled modules by the SHA-256 of their bytes, bounded by the size of their compiled code:
/// beyond `capacity` bytes the least recently used are dropped (a module a plugin still
/// serves stays alive through that plugin). Hand-written because it is a few lines over a
/// `HashMap` and sizes entries by wasmtime's compiled image, which an LRU crate cannot know.
struct ModuleCache {
    modules: HashMap<[u8; 32], (Module, usize, u64)>,
    bytes: usize,
    capacity: usize,
    clock: u64,
}

impl ModuleCache {
    fn new(capacity: u64) -> Self {
        Self {
            modules: HashMap::new(),
            bytes: 0,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            clock: 0,
        }
    }

    fn get(&mut self, sha: &[u8; 32]) -> Option<Module> {
        self.clock += 1;
        let clock = self.clock;
        self.modules.get_mut(sha).map(|(module, _, used)| {
            *used = clock;
            module.clone()
        })
    }

    /// Adds `module`, then forgets the least recently used others until the cache fits.
    fn insert(&mut self, sha: [u8; 32], module: Module) {
        self.clock += 1;
        let range = module.image_range();
        let size = (range.end as usize).saturating_sub(range.start as usize);
        if let Some((_, old, _)) = self.modules.insert(sha, (module, size, self.clock)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.capacity && self.modules.len() > 1 {
            let oldest = self
                .modules
                .iter()
                .filter(|(key, _)| **key != sha)
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(key, _)| *key);
            match oldest.and_then(|key| self.modules.remove(&key)) {
                Some((_, size, _)) => self.bytes -= size,
                None => break,
            }
        }
    }
}

/// Ticks the epoch thread goes on for once no call runs (100 ms), before it parks.
const TICKER_LINGER: u32 = 100;

/// The thread advancing the engine's epoch, ticking only while calls run: the first call to
/// start wakes it, and it parks again once none has run for [`TICKER_LINGER`] ticks. A call's
/// epoch deadline counts ticks from its start, so the epoch standing still while nothing runs
/// changes no deadline.
struct Ticker {
    running: AtomicUsize,
    /// Ticks so far.
    ticks: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    fn start(engine: Engine) -> Result<Arc<Ticker>, PluginError> {
        let ticker = Arc::new(Ticker {
            running: AtomicUsize::new(0),
            ticks: std::sync::atomic::AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let ticking = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("mofa-wasm-epoch".into())
            .spawn(move || {
                // Ticks in a row with no call running; the thread parks after TICKER_LINGER of
                // them, so a steady stream of calls with gaps between them does not pay a
                // wake-up each.
                let mut idle = TICKER_LINGER;
                while !ticking.stop.load(Ordering::Acquire) {
                    if ticking.running.load(Ordering::Acquire) == 0 {
                        idle += 1;
                        if idle > TICKER_LINGER {
                            // An `unpark` between the check and here makes this return at once.
                            std::thread::park();
                            idle = 0;
                            continue;
                        }
                    } else {
                        idle = 0;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    ticking.ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| PluginError::Load(format!("cannot start the epoch ticker: {e}")))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    /// Counts a call as running until the guard drops; the first one wakes the ticker.
    fn running(&self) -> Running<'_> {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
        Running(self)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// A call counted as running by the [`Ticker`].
struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The engine, module cache, epoch ticker and sandbox pool.
pub struct WasmRuntime {
    engine: Engine,
    config: WasmConfig,
    pool: Arc<SandboxPool>,
    cache: Mutex<ModuleCache>,
    caller: OnceLock<Arc<dyn PluginCaller>>,
    disk: OnceLock<DiskCache>,
    runtime: Option<tokio::runtime::Handle>,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl WasmRuntime {
    /// Builds the engine and starts the epoch ticker. Calls run on `pool`.
    pub fn new(config: WasmConfig, pool: Arc<SandboxPool>) -> Result<Arc<Self>, PluginError> {
        let cache = ModuleCache::new(config.module_cache_mb.saturating_mul(1 << 20));
        let instances = if config.max_instances == 0 {
            (pool.threads() * 16) as u32
        } else {
            config.max_instances
        };
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_core_instances(instances)
            .total_memories(instances)
            .total_tables(instances)
            .max_memory_size((config.max_memory_mb << 20) as usize)
            // Reset the memory a request used with memset instead of giving pages back to the
            // kernel and faulting them in again on the next request.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            // Where the kernel can say which pages a request dirtied (Linux 6.7+), reset only
            // those.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack((config.max_stack_kb << 10) as usize)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm)
            .map_err(|e| PluginError::Load(format!("cannot start the wasm engine: {e:#}")))?;

        let ticker = Ticker::start(engine.clone())?;

        Ok(Arc::new(Self {
            engine,
            config,
            pool,
            cache: Mutex::new(cache),
            caller: OnceLock::new(),
            disk: OnceLock::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            ticker,
        }))
    }

    /// Sets how modules granted `call_plugin` reach other plugins. Set once.
    pub fn set_caller(&self, caller: Arc<dyn PluginCaller>) {
        let _ = self.caller.set(caller);
    }

    /// Keeps compiled modules in `dir` too, so the next start loads them instead of compiling
    /// (see [`super::disk_cache`]). Set once, before the first module is loaded.
    pub fn set_disk_cache(&self, dir: std::path::PathBuf) {
        let _ = self.disk.set(DiskCache::new(dir, &self.engine));
    }

    /// With a disk cache: (modules loaded from it, modules compiled) so far.
    pub fn disk_cache_counts(&self) -> Option<(u64, u64)> {
        self.disk.get().map(|disk| {
            (
                disk.hits.load(Ordering::Relaxed),
                disk.compiled.load(Ordering::Relaxed),
            )
        })
    }

    /// The worker-wide settings.
    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// The pool calls run on.
    pub fn pool(&self) -> &Arc<SandboxPool> {
        &self.pool
    }

    /// Number of compiled modules in the cache.
    pub fn cached_modules(&self) -> usize {
        self.cache.lock().map(|c| c.modules.len()).unwrap_or(0)
    }

    /// The compiled module for `bytes` (binary or WAT), compiling it only if these exact bytes
    /// are not in the cache. Returns it with its SHA-256.
    pub fn module(&self, name: &str, bytes: &[u8]) -> Result<(Module, [u8; 32]), PluginError> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = self.cache.lock().ok().and_then(|mut c| c.get(&sha)) {
            return Ok((module, sha));
        }
        let compile = || Module::new(&self.engine, bytes);
        let module = match self.disk.get() {
            Some(disk) => disk.module(&self.engine, &sha, compile),
            None => compile(),
        }
        .map_err(|e| PluginError::Load(format!("{name}: not a valid wasm module: {e:#}")))?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(sha, module.clone());
        }
        Ok((module, sha))
    }

    /// Compiles (or takes from the cache) and checks a module against the ABI and its
    /// manifest: every import must be a granted host function, the ABI exports must exist.
    pub(crate) fn load(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<Loaded, PluginError> {
        let limits = Limits::resolve(&self.config, &manifest.limits)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        let (module, sha) = self.module(name, bytes)?;
        check_imports(name, &module, manifest)?;
        check_exports(name, &module)?;
        let linker = host::linker(&self.engine, &module, manifest)
            .map_err(|e| PluginError::Load(format!("{name}: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Load(format!("{name}: {e:#}")))?;
        let config = manifest
            .config
            .iter()
            .map(|(k, v)| (k.clone(), wire::encode(&toml_value(v))))
            .collect();
        let exports = AbiExports::of(name, &module, manifest.wasi)?;
        Ok(Loaded {
            pre,
            exports,
            wasi: manifest.wasi,
            sha256: hex::encode(sha),
            limits,
            host: Arc::new(HostContext {
                plugin: name.to_string(),
                config,
                max_regex_bytes: self.config.max_regex_bytes,
                caller: self.caller.get().cloned(),
                runtime: self.runtime.clone(),
                pool: self.pool.clone(),
            }),
        })
    }

    /// Runs one request in a fresh instance. Blocking: call it on a sandbox thread.
    pub(crate) fn invoke(
        &self,
        loaded: &Loaded,
        input: &[u8],
        deadline: Instant,
        depth: u32,
    ) -> Result<Value, PluginError> {
        self.run(loaded, input, deadline, depth, None)
    }

    /// [`WasmRuntime::invoke`] on this thread with at most [`INLINE_FUEL`] and no host
    /// function that acts (`call_plugin`, `log`): `None` when the call had to stop for either
    /// (its instance is thrown away; run it again, from the start, on the pool), else its
    /// result, long when it used more than [`SHORT_FUEL`]. WASI modules never run inline.
    pub(crate) fn try_inline(
        &self,
        loaded: &Loaded,
        input: &[u8],
        deadline: Instant,
        depth: u32,
    ) -> Option<InlineCall> {
        if loaded.wasi {
            return None;
        }
        let mut attempt = Attempt::default();
        let result = self.run(loaded, input, deadline, depth, Some(&mut attempt));
        (!attempt.deferred).then_some(InlineCall {
            result,
            worked_long: attempt.fuel_used > SHORT_FUEL,
        })
    }

    /// One request in a fresh instance; with `inline`, as [`WasmRuntime::try_inline`]
    /// describes, saying there whether the call had to stop and how much fuel it used.
    fn run(
        &self,
        loaded: &Loaded,
        input: &[u8],
        deadline: Instant,
        depth: u32,
        inline: Option<&mut Attempt>,
    ) -> Result<Value, PluginError> {
        let _ticking = self.ticker.running();
        let limits = &loaded.limits;
        let fuel = if inline.is_some() {
            limits.fuel.min(INLINE_FUEL)
        } else {
            limits.fuel
        };
        let mut store = self.store(loaded, deadline, depth, inline.is_some(), fuel)?;
        let outcome = call(&mut store, loaded, input);
        if let Some(attempt) = inline {
            attempt.fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
            attempt.deferred = match &outcome {
                Ok(_) => false,
                Err(e) => {
                    store.data().deferred
                        || fuel < limits.fuel
                            && matches!(e.downcast_ref::<Trap>(), Some(Trap::OutOfFuel))
                }
            };
        }
        match outcome {
            Ok((packed, memory)) => output(&store, packed, memory, limits),
            Err(e) => Err(classify(e, &store, limits)),
        }
    }

    /// A fresh store for one call: the memory cap, `fuel`, and an epoch deadline at `deadline`.
    fn store(
        &self,
        loaded: &Loaded,
        deadline: Instant,
        depth: u32,
        inline: bool,
        fuel: u64,
    ) -> Result<Store<StoreData>, PluginError> {
        let mut store = Store::new(
            &self.engine,
            StoreData {
                memory: MemoryCap {
                    max_bytes: loaded.limits.max_memory_bytes,
                    refused: None,
                },
                host: loaded.host.clone(),
                depth,
                deadline,
                inline,
                deferred: false,
            },
        );
        store.limiter(|data| &mut data.memory);
        store
            .set_fuel(fuel)
            .map_err(|e| PluginError::Failed(format!("cannot set fuel: {e}")))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ticks = (remaining.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        Ok(store)
    }
}

/// Instantiates the module in `store`, copies `input` into the guest and calls its handler:
/// where its output is, and the memory it is in.
fn call(
    store: &mut Store<StoreData>,
    loaded: &Loaded,
    input: &[u8],
) -> wasmtime::Result<(Packed, wasmtime::Memory)> {
    let instance = loaded.pre.instantiate(&mut *store)?;
    let exports = &loaded.exports;
    if let Some(initialize) = &exports.initialize {
        AbiExports::func::<(), ()>(&instance, &mut *store, initialize)?.call(&mut *store, ())?;
    }
    let alloc = AbiExports::func::<i32, i32>(&instance, &mut *store, &exports.alloc)?;
    let handle = AbiExports::func::<(i32, i32), i64>(&instance, &mut *store, &exports.handle)?;
    let memory = instance
        .get_module_export(&mut *store, &exports.memory)
        .and_then(wasmtime::Extern::into_memory)
        .ok_or_else(|| BadAbi(format!("module does not export {EXPORT_MEMORY:?}")))?;
    let len = i32::try_from(input.len())?;
    let ptr = alloc.call(&mut *store, len)?;
    memory
        .write(&mut *store, ptr as u32 as usize, input)
        .map_err(|_| {
            BadAbi(format!(
                "{EXPORT_ALLOC}({len}) returned {ptr}, outside guest memory"
            ))
        })?;
    let packed = Packed::unpack(handle.call(&mut *store, (ptr, len))?);
    Ok((packed, memory))
}

/// The guest's output: its value, or the error it returned, checked against the ABI and
/// `max_output_bytes`.
fn output(
    store: &Store<StoreData>,
    packed: Packed,
    memory: wasmtime::Memory,
    limits: &Limits,
) -> Result<Value, PluginError> {
    let data = memory.data(store);
    let start = packed.ptr as usize;
    let Some(bytes) = data.get(start..start + packed.len as usize) else {
        return Err(PluginError::Failed(format!(
            "bad ABI output: {EXPORT_HANDLE} returned buffer [{start}, +{}), outside guest memory ({} bytes)",
            packed.len,
            data.len()
        )));
    };
    if bytes.len() > limits.max_output_bytes {
        return Err(PluginError::LimitExceeded(format!(
            "output of {} bytes exceeds the limit of {} bytes",
            bytes.len(),
            limits.max_output_bytes
        )));
    }
    if packed.error {
        let body: ErrorBody = rmp_serde::from_slice(bytes).map_err(|e| {
            PluginError::Failed(format!(
                "bad ABI output: error buffer is not a {{code, message}} map: {e}"
            ))
        })?;
        return Err(PluginError::from_code(body.code, body.message));
    }
    wire::decode(bytes).map_err(|e| PluginError::Failed(format!("bad ABI output: {e}")))
}

/// How an inline attempt went (see [`WasmRuntime::try_inline`]).
#[derive(Default)]
struct Attempt {
    /// It had to stop: run it again on the pool.
    deferred: bool,
    /// Fuel the guest used.
    fuel_used: u64,
}

/// A guest broke the ABI (as opposed to trapping or tripping a limit).
#[derive(Debug)]
struct BadAbi(String);

impl std::fmt::Display for BadAbi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad ABI: {}", self.0)
    }
}

impl std::error::Error for BadAbi {}

/// Maps a failed call to the reply error naming what stopped it.
fn classify(error: wasmtime::Error, store: &Store<StoreData>, limits: &Limits) -> PluginError {
    if let Some(wanted) = store.data().memory.refused {
        return PluginError::LimitExceeded(format!(
            "memory cap of {} MiB exceeded (the module asked for {} MiB)",
            limits.max_memory_bytes >> 20,
            wanted.div_ceil(1 << 20)
        ));
    }
    if let Some(exited) = error.downcast_ref::<super::wasi::Exited>() {
        return PluginError::Failed(exited.to_string());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            PluginError::LimitExceeded(format!("fuel limit of {} exhausted", limits.fuel))
        }
        Some(Trap::Interrupt) => PluginError::Timeout(format!(
            "module exceeded its deadline of {} ms",
            limits.timeout.as_millis()
        )),
        Some(Trap::StackOverflow) => PluginError::LimitExceeded(
            "wasm stack exhausted (recursion too deep for the stack limit)".to_string(),
        ),
        Some(trap) => PluginError::Failed(format!("wasm trap: {trap}")),
        None if error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some() =>
        {
            PluginError::Unavailable(format!("no wasm instance slot free: {error:#}"))
        }
        None => PluginError::Failed(format!("{error:#}")),
    }
}

/// Every import must be a host function of module `mofa` that the manifest grants.
fn check_imports(name: &str, module: &Module, manifest: &Manifest) -> Result<(), PluginError> {
    for import in module.imports() {
        let what = format!("{}::{}", import.module(), import.name());
        if import.module() == WASI_MODULE && wasi::is_preview1(import.name()) {
            if manifest.wasi {
                continue;
            }
            return Err(PluginError::Load(format!(
                "{name}: imports {what}, but its manifest does not grant WASI (add wasi = true \
                 to {name}.toml: clocks, random and stdout/stderr into the worker's log; no file \
                 system or network)"
            )));
        }
        let capability = (import.module() == HOST_MODULE)
            .then(|| Capability::from_import(import.name()))
            .flatten();
        match capability {
            None => {
                return Err(PluginError::Load(format!(
                    "{name}: imports {what}, which mofa-bus does not provide (host functions: {}; \
                     WASI preview 1 with wasi = true)",
                    Capability::ALL
                        .map(|c| format!("{HOST_MODULE}::{}", c.as_str()))
                        .join(", ")
                )))
            }
            Some(c) if !manifest.grants(c) => {
                return Err(PluginError::Load(format!(
                    "{name}: imports {what}, but its manifest does not grant it \
                     (add capabilities = [\"{}\"] to {name}.toml)",
                    c.as_str()
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The ABI exports must exist with the right types.
fn check_exports(name: &str, module: &Module) -> Result<(), PluginError> {
    let export = |n: &str| module.exports().find(|e| e.name() == n).map(|e| e.ty());
    let missing = |what: &str| {
        PluginError::Load(format!(
            "{name}: does not export {what} (see plugins/wasm/ABI.md)"
        ))
    };
    match export(EXPORT_MEMORY) {
        Some(ExternType::Memory(_)) => {}
        _ => return Err(missing("its memory as \"memory\"")),
    }
    let func = |n: &str, params: &[ValType], results: &[ValType]| match export(n) {
        Some(ExternType::Func(f))
            if f.params()
                .map(|p| p.to_string())
                .eq(params.iter().map(|p| p.to_string()))
                && f.results()
                    .map(|r| r.to_string())
                    .eq(results.iter().map(|r| r.to_string())) =>
        {
            Ok(())
        }
        _ => Err(missing(&format!(
            "{n}({}) -> {}",
            params
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            results
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    };
    func(EXPORT_ALLOC, &[ValType::I32], &[ValType::I32])?;
    func(
        EXPORT_HANDLE,
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )
}

/// A manifest `[config]` value as a wire value.
fn toml_value(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::F64(*f),
        toml::Value::Boolean(b) => Value::Boolean(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_value).collect()),
        toml::Value::Table(t) => Value::Map(
            t.iter()
                .map(|(k, v)| (Value::from(k.as_str()), toml_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod ticker_tests {
    use super::*;

    #[test]
    fn the_epoch_ticks_while_calls_run_lingers_then_parks() {
        let ticker = Ticker::start(Engine::default()).expect("ticker starts");
        let ticks = || ticker.ticks.load(Ordering::Relaxed);
        // Idle: the thread is parked.
        let idle = ticks();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticks(), idle, "no ticks while nothing runs");
        // A call running for 100 ms: about one tick per millisecond.
        let running = ticker.running();
        std::thread::sleep(Duration::from_millis(100));
        let during = ticks() - idle;
        drop(running);
        assert!(during >= 10, "ticks while a call runs: {during}");
        // It lingers a little after the last call (so a next call soon after needs no wake-up),
        let at_end = ticks();
        std::thread::sleep(Duration::from_millis(30));
        assert!(ticks() > at_end, "the ticker lingers after a call");
        // then parks once no call has run for TICKER_LINGER ticks: the count stands still.
        let ended = std::time::Instant::now();
        loop {
            let before = ticks();
            std::thread::sleep(Duration::from_millis(150));
            if ticks() == before {
                break;
            }
            assert!(
                ended.elapsed() < Duration::from_secs(10),
                "still ticking {:?} after the last call ended",
                ended.elapsed()
            );
        }
        ticker.stop();
    }
}
