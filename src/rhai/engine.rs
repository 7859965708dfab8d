//! The sandboxed Rhai engine shared by every script on a worker.
//!
//! Built once from a [`RhaiConfig`]: operation, call-depth, string, array, map and expression
//! limits set on the engine; `eval` and `import` disabled, no module resolver (so no file
//! access), `print`/`debug` routed to `tracing`, the standard library registered. Scripts get a
//! per-plugin state map through `state_get(key)`, `state_set(key, value)` and
//! `state_remove(key)`. Rhai has no wall-clock limit of its own, so the progress callback
//! checks a per-thread deadline every [`DEADLINE_CHECK_EVERY`] operations and terminates the
//! script once it has passed.
//!
//! [`ScriptEngine::compile`] decides a script's shape once, at load; [`ScriptEngine::call_until`]
//! binds a request to it (arguments, tool schema, rule set) on every call.
//!
//! [`ScriptEngine::try_inline`] runs a call where the request arrived instead of on a sandbox
//! thread, saving the two thread hand-offs that cost more than a short script itself. It may
//! take at most [`INLINE_LIMIT`] there, and it may do nothing anyone else can see: the first
//! `state_set`, `state_remove` or `call_plugin`, or the limit passing, stops it before it acts
//! (a termination a script cannot catch), and the caller runs the call again from the start
//! on the pool. Everything the script did until then was computation on its own values, so
//! running it twice is not observable; lines it printed are held until it finishes, and
//! dropped if it moves. The deadline and every other limit hold as always.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Scope, AST};

use super::config::RhaiConfig;
use super::convert::{from_dynamic, to_dynamic};
use super::rules::{RuleError, RuleSet, RULES_VARIABLE};
use super::tool::{self, Tool};
use crate::plugin::{call_nested, InlineCall, PluginCaller, PluginError, SandboxPool, Value};

/// How many operations pass between two deadline checks (a power of two).
pub const DEADLINE_CHECK_EVERY: u64 = 256;

/// Longest a call may run inline (see [`ScriptEngine::try_inline`]) before it moves to the
/// sandbox pool: well above a short rule (1–10 µs), well below what would hold up the other
/// requests of the async thread it runs on.
pub const INLINE_LIMIT: std::time::Duration = std::time::Duration::from_micros(200);

/// Operations past which an inline call that finished counts as long for its plugin's
/// [`crate::plugin::InlineGate`]: some tens of µs of script (a short rule runs tens of
/// operations). A multiple of [`DEADLINE_CHECK_EVERY`], the granularity at which operations
/// are counted.
pub const SHORT_OPERATIONS: u64 = 2 * DEADLINE_CHECK_EVERY;

/// The termination token of a call that must continue on the pool.
const DEFER: &str = "mofa: continue on the sandbox pool";

/// A plugin's state map, shared by its calls (and, with `preserve_state`, by its revisions).
pub type StateMap = Arc<Mutex<rhai::Map>>;

thread_local! {
    /// Deadline of the call running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// State map of the plugin whose call runs on this thread, if any.
    static STATE: RefCell<Option<StateMap>> = const { RefCell::new(None) };
    /// How many plugin-to-plugin calls deep the call running on this thread is.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// While a call runs inline: when it must move to the pool.
    static INLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set when the inline call on this thread was stopped to continue on the pool.
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
    /// Operations the inline call on this thread has run, as of its last deadline check.
    static INLINE_OPERATIONS: Cell<u64> = const { Cell::new(0) };
    /// What the inline call on this thread printed: logged once it finishes, dropped if it
    /// moves to the pool (where it prints again).
    static PRINTED: RefCell<Vec<Printed>> = const { RefCell::new(Vec::new()) };
}

/// A line a script printed (`print`) or debugged (`debug`, with its source and position).
enum Printed {
    Print(String),
    Debug(String, String, String),
}

impl Printed {
    fn log(self) {
        match self {
            Printed::Print(text) => tracing::info!(target: "mofa::script", "{text}"),
            Printed::Debug(text, source, pos) => {
                tracing::debug!(target: "mofa::script", source, pos, "{text}")
            }
        }
    }

    /// Logs it now, or holds it while an inline call runs.
    fn emit(self) {
        if INLINE.with(|i| i.get()).is_some() {
            PRINTED.with(|p| p.borrow_mut().push(self));
        } else {
            self.log();
        }
    }
}

/// Stops an inline call before it does something visible (see [`ScriptEngine::try_inline`]);
/// `Ok` outside inline calls.
fn not_inline() -> Result<(), Box<EvalAltResult>> {
    if INLINE.with(|i| i.get()).is_none() {
        return Ok(());
    }
    DEFERRED.with(|d| d.set(true));
    Err(EvalAltResult::ErrorTerminated(Dynamic::from(DEFER), rhai::Position::NONE).into())
}

/// Marks this thread's call as inline (limited to `until`) until dropped.
struct InlineGuard;

impl InlineGuard {
    fn set(until: Instant) -> Self {
        INLINE.with(|i| i.set(Some(until)));
        DEFERRED.with(|d| d.set(false));
        INLINE_OPERATIONS.with(|o| o.set(0));
        PRINTED.with(|p| p.borrow_mut().clear());
        InlineGuard
    }
}

impl Drop for InlineGuard {
    fn drop(&mut self) {
        INLINE.with(|i| i.set(None));
    }
}

/// Makes a call's deadline, state map and depth this thread's until dropped, then puts back
/// what was there before, even if the call unwinds: a script's `call_plugin` may run another
/// script on the same thread, and the caller carries on under its own deadline and state.
struct CallGuard {
    deadline: Option<Instant>,
    state: Option<StateMap>,
    depth: u32,
}

impl CallGuard {
    fn set(deadline: Instant, state: Option<StateMap>, depth: u32) -> Self {
        CallGuard {
            deadline: DEADLINE.with(|d| d.replace(Some(deadline))),
            state: STATE.with(|s| s.replace(state)),
            depth: DEPTH.with(|d| d.replace(depth)),
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.deadline));
        STATE.with(|s| *s.borrow_mut() = self.state.take());
        DEPTH.with(|d| d.set(self.depth));
    }
}

fn with_state<T>(f: impl FnOnce(&mut rhai::Map) -> T) -> Result<T, Box<EvalAltResult>> {
    STATE.with(|s| match s.borrow().as_ref() {
        Some(state) => Ok(f(&mut state.lock().unwrap_or_else(|e| e.into_inner()))),
        None => Err("state is only available inside a plugin call".into()),
    })
}

/// How scripts reach other plugins: the worker's caller and the runtime its calls need.
struct Caller {
    caller: Arc<dyn PluginCaller>,
    runtime: tokio::runtime::Handle,
}

/// An error a script can catch: `#{code, message}`, as a callee's error arrives.
fn catchable(code: u16, message: String) -> Box<EvalAltResult> {
    let mut map = rhai::Map::new();
    map.insert("code".into(), Dynamic::from_int(i64::from(code)));
    map.insert("message".into(), message.into());
    EvalAltResult::ErrorRuntime(map.into(), rhai::Position::NONE).into()
}

/// `call_plugin(name, input)`: runs plugin `name` (on this worker if it serves it, otherwise
/// over the bus) one call deeper, under the caller's remaining deadline. A callee's error is a
/// catchable `#{code, message}`.
fn call_plugin(
    caller: &OnceLock<Caller>,
    pool: &SandboxPool,
    timeout: std::time::Duration,
    name: &str,
    input: Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let Some(c) = caller.get() else {
        return Err(catchable(
            503,
            format!(
                "call_plugin({name}): this engine has no plugin caller (it runs outside a worker)"
            ),
        ));
    };
    let deadline = DEADLINE
        .with(|d| d.get())
        .unwrap_or_else(|| Instant::now() + timeout);
    let input = || {
        from_dynamic(input)
            .map_err(|e| PluginError::BadInput(format!("call_plugin({name}): input: {e}")))
    };
    let depth = DEPTH.with(|d| d.get());
    match call_nested(
        pool,
        c.caller.as_ref(),
        &c.runtime,
        name,
        input,
        depth,
        deadline,
    ) {
        Ok(value) => to_dynamic(value)
            .map_err(|e| catchable(500, format!("call_plugin({name}): output: {e}"))),
        Err(e) => Err(catchable(e.code().as_u16(), e.to_string())),
    }
}

/// A compiled script and what a call runs.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The compiled script.
    pub ast: AST,
    /// What a call runs.
    pub shape: Shape,
    /// Set for a tool: its spec and argument schema, checked before every call.
    pub tool: Option<Tool>,
}

/// What a call to a script runs.
#[derive(Debug, Clone)]
pub enum Shape {
    /// An entry function. Its parameters bind by count: none get nothing, one gets the whole
    /// input, several get the input map's fields of the same names.
    Function {
        /// The function's name.
        name: String,
        /// Its parameter names.
        params: Vec<String>,
    },
    /// A rule set (see [`super::rules`]).
    Rules(RuleSet),
}

impl Entry {
    /// The entry function's name, for a script with one.
    pub fn function(&self) -> Option<&str> {
        match &self.shape {
            Shape::Function { name, .. } => Some(name),
            Shape::Rules(_) => None,
        }
    }
}

/// The engine, the limits it was built with, and the pool its calls run on.
pub struct ScriptEngine {
    engine: Engine,
    config: RhaiConfig,
    pool: Arc<SandboxPool>,
    caller: Arc<OnceLock<Caller>>,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl ScriptEngine {
    /// Builds the sandboxed engine with a sandbox pool of its own.
    pub fn new(config: RhaiConfig) -> Self {
        Self::with_pool(config, SandboxPool::new(0))
    }

    /// Builds the sandboxed engine; calls run on `pool`.
    pub fn with_pool(config: RhaiConfig, pool: Arc<SandboxPool>) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(config.max_operations)
            .set_max_call_levels(config.max_call_levels)
            .set_max_string_size(config.max_string_size)
            .set_max_array_size(config.max_array_size)
            .set_max_map_size(config.max_map_size)
            .set_max_expr_depths(config.max_expr_depth, config.max_fn_expr_depth)
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
            .disable_symbol("eval")
            .disable_symbol("import")
            .on_print(|text| Printed::Print(text.to_string()).emit())
            .on_debug(|text, source, pos| {
                Printed::Debug(
                    text.to_string(),
                    source.unwrap_or("").to_string(),
                    pos.to_string(),
                )
                .emit()
            })
            .on_progress(|ops| {
                if ops % DEADLINE_CHECK_EVERY != 0 {
                    return None;
                }
                let now = Instant::now();
                if DEADLINE.with(|d| d.get().is_some_and(|t| now >= t)) {
                    return Some(Dynamic::from("deadline"));
                }
                if let Some(until) = INLINE.with(Cell::get) {
                    if now >= until {
                        DEFERRED.with(|d| d.set(true));
                        return Some(Dynamic::from(DEFER));
                    }
                    INLINE_OPERATIONS.with(|o| o.set(ops));
                }
                None
            });
        let max_entries = config.max_map_size;
        engine
            .register_fn("state_get", |key: &str| {
                with_state(|m| m.get(key).cloned().unwrap_or(Dynamic::UNIT))
            })
            .register_fn(
                "state_set",
                move |key: &str, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
                    not_inline()?;
                    with_state(|m| {
                        if max_entries > 0 && !m.contains_key(key) && m.len() >= max_entries {
                            return Err(EvalAltResult::ErrorDataTooLarge(
                                "Size of state map".into(),
                                rhai::Position::NONE,
                            )
                            .into());
                        }
                        m.insert(key.into(), value);
                        Ok(())
                    })?
                },
            )
            .register_fn("state_remove", |key: &str| {
                not_inline()?;
                with_state(|m| m.remove(key).unwrap_or(Dynamic::UNIT))
            });
        super::stdlib::register(&mut engine, &config);
        let caller: Arc<OnceLock<Caller>> = Arc::default();
        let (reach, waits, timeout) = (caller.clone(), pool.clone(), config.timeout());
        engine.register_fn(
            "call_plugin",
            move |name: &str, input: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
                not_inline()?;
                call_plugin(&reach, &waits, timeout, name, input)
            },
        );
        Self {
            engine,
            config,
            pool,
            caller,
        }
    }

    /// Sets how scripts' `call_plugin` reaches other plugins, and the runtime its calls run
    /// on. Set once.
    pub fn set_caller(&self, caller: Arc<dyn PluginCaller>, runtime: tokio::runtime::Handle) {
        let _ = self.caller.set(Caller { caller, runtime });
    }

    /// The pool calls run on.
    pub fn pool(&self) -> &Arc<SandboxPool> {
        &self.pool
    }

    /// The limits this engine enforces.
    pub fn config(&self) -> &RhaiConfig {
        &self.config
    }

    /// Compiles `source`, runs its top-level statements once, and finds what a call runs, in
    /// this order:
    /// - a tool: the top level defines (or returns) a `tool` map (see [`super::tool`]); its
    ///   entry is `execute`;
    /// - a function named `execute`;
    /// - a rule set: the top level defines a `rules` array (see [`super::rules`]);
    /// - the function the top level names in its last statement (the seed form);
    /// - the script's only function.
    ///
    /// A syntax error reads `NAME:LINE:COLUMN: what`, the form editors and terminals link.
    pub fn compile(&self, name: &str, source: &str) -> Result<Entry, PluginError> {
        self.compile_as(name, source, name)
    }

    /// [`compile`](Self::compile), its syntax errors naming `shown_as` (the file the script came
    /// from) instead of the plugin name.
    pub fn compile_as(
        &self,
        name: &str,
        source: &str,
        shown_as: &str,
    ) -> Result<Entry, PluginError> {
        let mut ast = self
            .engine
            .compile(source)
            .map_err(|e| PluginError::Load(syntax_error(shown_as, &e)))?;
        ast.set_source(name);
        let functions: Vec<(String, Vec<String>)> = ast
            .iter_functions()
            .filter(|f| !f.name.starts_with("anon$"))
            .map(|f| {
                (
                    f.name.to_string(),
                    f.params.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect();
        // The function called `wanted`, preferring the one-parameter overload.
        let function = |wanted: &str| {
            let mut found = functions.iter().filter(|(n, _)| n == wanted);
            let first = found.next()?;
            let one = std::iter::once(first)
                .chain(found)
                .find(|(_, p)| p.len() == 1)
                .unwrap_or(first);
            Some(Shape::Function {
                name: one.0.clone(),
                params: one.1.clone(),
            })
        };
        let mut scope = Scope::new();
        let result = {
            let _call = CallGuard::set(Instant::now() + self.config.timeout(), None, 0);
            self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
        };
        let (value, named) = match result {
            Ok(value) if value.is_fnptr() => {
                let named = value.clone_cast::<rhai::FnPtr>().fn_name().to_string();
                (value, named)
            }
            Ok(value) if value.is_string() => {
                let named = value.to_string();
                (value, named)
            }
            Ok(value) => (value, String::new()),
            Err(e) => match *e {
                // A function named as a value (`process_order`, `#{ execute: execute }`).
                EvalAltResult::ErrorVariableNotFound(ref var, _) if function(var).is_some() => {
                    (Dynamic::UNIT, var.clone())
                }
                _ => {
                    return Err(PluginError::Load(format!(
                        "{name}: top-level statements failed: {}",
                        classify(*e, &self.config)
                    )))
                }
            },
        };
        let (shape, tool) = if let Some(map) = tool::find(&value, &scope) {
            let tool = Tool::from_map(name, map)?;
            let shape = function("execute").ok_or_else(|| {
                PluginError::Load(format!(
                    "{name}: tool {}: define `fn execute(args)`, which runs a call",
                    tool.spec.name
                ))
            })?;
            (shape, Some(tool))
        } else if let Some(shape) = function("execute") {
            (shape, None)
        } else if let Some(rules) = scope.get_value::<rhai::Array>(RULES_VARIABLE) {
            // Before a named entry: the docs' rule files end with `evaluate`, which the
            // engine replaces.
            (Shape::Rules(RuleSet::from_array(name, rules)?), None)
        } else if let Some(shape) = function(&named) {
            (shape, None)
        } else if let [(only, params)] = functions.as_slice() {
            let shape = Shape::Function {
                name: only.clone(),
                params: params.clone(),
            };
            (shape, None)
        } else {
            return Err(PluginError::Load(format!(
                "{name}: no entry point: define `fn execute(input)`, define exactly one function, \
                 end the script with the name of its entry function, define a `tool` map (a \
                 tool) or a `rules` array (a rule set); this script defines {} functions",
                functions.len()
            )));
        };
        Ok(Entry { ast, shape, tool })
    }

    /// Runs the entry function on `input` with this engine's limits, the deadline starting now.
    /// Blocking: call it from a sandbox thread.
    pub fn call(&self, entry: &Entry, input: Value) -> Result<Value, PluginError> {
        self.call_until(
            entry,
            input,
            Instant::now() + self.config.timeout(),
            None,
            0,
        )
    }

    /// [`ScriptEngine::call_until`] on this thread, for at most [`INLINE_LIMIT`] and with
    /// nothing visible done: `None` when the call had to stop for either (it must then run
    /// again, from the start, on the pool), else its result, long when it ran more than
    /// [`SHORT_OPERATIONS`].
    pub fn try_inline(
        &self,
        entry: &Entry,
        input: Value,
        deadline: Instant,
        state: Option<StateMap>,
        depth: u32,
    ) -> Option<InlineCall> {
        let result = {
            let _inline = InlineGuard::set(Instant::now() + INLINE_LIMIT);
            self.call_until(entry, input, deadline, state, depth)
        };
        let printed = PRINTED.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if DEFERRED.with(|d| d.replace(false)) {
            return None;
        }
        printed.into_iter().for_each(Printed::log);
        Some(InlineCall {
            result,
            worked_long: INLINE_OPERATIONS.with(Cell::get) > SHORT_OPERATIONS,
        })
    }

    /// Runs the entry function on `input` with `state` as its state map, `depth` plugin calls
    /// deep, terminating it at `deadline`. Blocking.
    pub fn call_until(
        &self,
        entry: &Entry,
        input: Value,
        deadline: Instant,
        state: Option<StateMap>,
        depth: u32,
    ) -> Result<Value, PluginError> {
        let _call = CallGuard::set(deadline, state, depth);
        if let Some(tool) = &entry.tool {
            tool.check(&input)?;
        }
        let result = match &entry.shape {
            Shape::Function { name, params } => {
                let args = bind(name, params, input)?;
                self.engine.call_fn_with_options::<Dynamic>(
                    CallFnOptions::new().eval_ast(false).rewind_scope(true),
                    &mut Scope::new(),
                    &entry.ast,
                    name,
                    args,
                )
            }
            Shape::Rules(rules) => {
                match rules.evaluate(&self.engine, &entry.ast, to_dynamic(input)?) {
                    Ok(value) => Ok(value),
                    Err(RuleError::Script(rule, e)) => {
                        let error = classify(*e, &self.config);
                        return Err(PluginError::from_code(
                            error.code().as_u16(),
                            format!("rule {rule:?}: {error}"),
                        ));
                    }
                    Err(RuleError::NotBool(rule, type_name)) => {
                        return Err(PluginError::Failed(format!(
                            "rule {rule:?}: its condition returned {type_name}, not a bool"
                        )))
                    }
                }
            }
        };
        match result {
            Ok(value) => from_dynamic(value),
            Err(e) => Err(classify(*e, &self.config)),
        }
    }
}

/// The arguments of entry function `name(params)` for `input`: nothing, the whole input, or the
/// input map's fields named like the parameters (a missing one is a 400 naming it; fields no
/// parameter names are ignored).
fn bind(name: &str, params: &[String], input: Value) -> Result<Vec<Dynamic>, PluginError> {
    match params.len() {
        0 => Ok(Vec::new()),
        1 => Ok(vec![to_dynamic(input)?]),
        _ => {
            let signature = || format!("{name}({})", params.join(", "));
            let Value::Map(mut entries) = input else {
                return Err(PluginError::BadInput(format!(
                    "input must be a map with fields {}: {} takes them by name",
                    params.join(", "),
                    signature()
                )));
            };
            params
                .iter()
                .map(|param| {
                    let at = entries
                        .iter()
                        .position(|(k, _)| k.as_str() == Some(param.as_str()))
                        .ok_or_else(|| {
                            PluginError::BadInput(format!(
                                "missing field {param:?}: {} takes the input map's fields by name",
                                signature()
                            ))
                        })?;
                    to_dynamic(std::mem::replace(&mut entries[at].1, Value::Nil))
                })
                .collect()
        }
    }
}

/// Maps a script error to a plugin error: limits to 413, the deadline to 408, a thrown
/// `#{code: 400, message}` to 400, anything else to 500 with the script's own message.
pub fn classify(error: EvalAltResult, config: &RhaiConfig) -> PluginError {
    let root = error.unwrap_inner();
    match root {
        EvalAltResult::ErrorTerminated(..) => PluginError::Timeout(format!(
            "script exceeded its deadline of {} ms",
            config.timeout_ms
        )),
        EvalAltResult::ErrorTooManyOperations(pos) => PluginError::LimitExceeded(format!(
            "script exceeded the operation limit of {} ({pos})",
            config.max_operations
        )),
        EvalAltResult::ErrorStackOverflow(pos) => PluginError::LimitExceeded(format!(
            "script exceeded the call-depth limit of {} ({pos})",
            config.max_call_levels
        )),
        EvalAltResult::ErrorDataTooLarge(what, pos) => {
            let limit = if what.contains("string") || what.contains("String") {
                format!("{} bytes per string", config.max_string_size)
            } else if what.contains("rray") {
                format!("{} elements per array", config.max_array_size)
            } else if what.contains("map") || what.contains("Map") {
                format!("{} entries per map", config.max_map_size)
            } else if what.contains("pattern") {
                format!("{} bytes (rhai.max_regex_bytes)", config.max_regex_bytes)
            } else {
                "the configured size".to_string()
            };
            PluginError::LimitExceeded(format!("{what} exceeds the limit of {limit} ({pos})"))
        }
        EvalAltResult::ErrorTooManyVariables(pos) | EvalAltResult::ErrorTooManyModules(pos) => {
            PluginError::LimitExceeded(format!("{root} ({pos})"))
        }
        EvalAltResult::ErrorRuntime(value, _) => thrown(value),
        other => PluginError::Failed(other.to_string()),
    }
}

/// The error a script raised with `throw`: `#{code, message}` keeps its code (400, 408, 413,
/// 503; anything else is 500), so an uncaught error from `call_plugin` keeps the callee's code.
fn thrown(value: &Dynamic) -> PluginError {
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let code = map.get("code").and_then(|c| c.as_int().ok());
        let message = map
            .get("message")
            .map(|m| m.to_string())
            .unwrap_or_else(|| value.to_string());
        return match code.and_then(|c| u16::try_from(c).ok()) {
            Some(code) => PluginError::from_code(code, message),
            None => PluginError::Failed(message),
        };
    }
    PluginError::Failed(value.to_string())
}

/// `FILE:LINE:COLUMN: what` for a script that does not parse (`FILE: what` when Rhai gives no
/// position).
fn syntax_error(shown_as: &str, error: &rhai::ParseError) -> String {
    let position = error.position();
    match (position.line(), position.position()) {
        (Some(line), Some(column)) => format!("{shown_as}:{line}:{column}: {}", error.err_type()),
        (Some(line), None) => format!("{shown_as}:{line}: {}", error.err_type()),
        _ => format!("{shown_as}: {}", error.err_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> ScriptEngine {
        ScriptEngine::with_pool(RhaiConfig::default(), SandboxPool::new(1))
    }

    fn inline(engine: &ScriptEngine, source: &str, state: &StateMap) -> Option<InlineCall> {
        let entry = engine.compile("t", source).expect("compiles");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        engine.try_inline(&entry, Value::from(2), deadline, Some(state.clone()), 0)
    }

    #[test]
    fn a_short_pure_call_finishes_inline_with_its_result_or_error() {
        let (engine, state) = (engine(), StateMap::default());
        let done = inline(
            &engine,
            "fn execute(x) { state_get(\"n\") ?? x * 21 }",
            &state,
        );
        let done = done.expect("inline");
        assert_eq!(done.result.expect("ok"), Value::from(42));
        assert!(!done.worked_long, "a few operations");
        let thrown = inline(
            &engine,
            "fn execute(x) { throw #{ code: 400, message: \"no\" } }",
            &state,
        );
        assert_eq!(
            thrown
                .expect("inline")
                .result
                .expect_err("thrown")
                .code()
                .as_u16(),
            400
        );
    }

    #[test]
    fn an_inline_call_past_short_operations_counts_as_long() {
        let (engine, state) = (engine(), StateMap::default());
        // At least two operations per round (the loop step and the addition), so past the
        // first count above SHORT_OPERATIONS, and as few rounds as that takes: the attempt must
        // finish within INLINE_LIMIT of wall time (one that does not is tried again), which a
        // debug build on a busy machine often misses with many more.
        let rounds = (SHORT_OPERATIONS + DEADLINE_CHECK_EVERY) / 2;
        let source = format!("fn execute(x) {{ let n = 0; for i in 0..{rounds} {{ n += i; }} n }}");
        // On a busy machine many attempts are preempted past INLINE_LIMIT: try often enough
        // that one is not.
        let finished = (0..1000)
            .find_map(|_| inline(&engine, &source, &state))
            .expect("finished inline once in 1000 attempts");
        assert!(finished.result.is_ok(), "{:?}", finished.result);
        assert!(finished.worked_long, "{rounds} rounds");
    }

    #[test]
    fn an_inline_call_stops_before_it_acts_and_then_acts_once_on_the_pool() {
        let (engine, state) = (engine(), StateMap::default());
        for source in [
            "fn execute(x) { state_set(\"n\", x); x }",
            "fn execute(x) { try { state_set(\"n\", x) } catch { } x }",
            "fn helper(x) { state_remove(\"n\"); state_set(\"n\", x) } fn execute(x) { try { helper(x) } catch { } x }",
            "fn execute(x) { call_plugin(\"echo\", x) }",
        ] {
            assert!(inline(&engine, source, &state).is_none(), "{source}");
            assert!(state.lock().expect("state").is_empty(), "{source}: nothing done inline");
        }
        let entry = engine
            .compile("t", "fn execute(x) { state_set(\"n\", x); x }")
            .expect("compiles");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let done = engine.call_until(&entry, Value::from(2), deadline, Some(state.clone()), 0);
        assert_eq!(done.expect("ok"), Value::from(2));
        assert_eq!(
            state
                .lock()
                .expect("state")
                .get("n")
                .and_then(|v| v.as_int().ok()),
            Some(2)
        );
    }

    #[test]
    fn lines_an_inline_call_prints_are_logged_once_wherever_it_finishes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if event.metadata().target() == "mofa::script" {
                    self.0.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let lines = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Count(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let (engine, state) = (engine(), StateMap::default());
            let finished = inline(&engine, "fn execute(x) { print(\"a\"); x }", &state);
            assert!(finished.is_some());
            assert_eq!(
                lines.load(Ordering::Relaxed),
                1,
                "logged when it finishes inline"
            );
            let source = "fn execute(x) { print(\"b\"); state_set(\"n\", x); x }";
            assert!(inline(&engine, source, &state).is_none());
            assert_eq!(lines.load(Ordering::Relaxed), 1, "dropped when it moves");
            let entry = engine.compile("t", source).expect("compiles");
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            engine
                .call_until(&entry, Value::from(1), deadline, Some(state), 0)
                .expect("ok");
            assert_eq!(
                lines.load(Ordering::Relaxed),
                2,
                "logged by the run that acts"
            );
        });
    }

    #[test]
    fn a_long_call_leaves_the_thread_at_the_inline_limit_not_its_deadline() {
        let (engine, state) = (engine(), StateMap::default());
        let entry = engine
            .compile("t", "fn execute(x) { let n = 0; loop { n += 1; } }")
            .expect("compiles");
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_secs(60);
        let long = engine.try_inline(&entry, Value::from(2), deadline, Some(state.clone()), 0);
        assert!(long.is_none(), "moved to the pool");
        // It stops at the inline limit (200 µs), not at its 60 s deadline. The bound is far
        // from both, so a machine busy with other tests cannot make it fail.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "left after {:?}",
            started.elapsed()
        );
        // The deadline still wins when it comes first.
        let entry = engine
            .compile("t", "fn execute(x) { loop {} }")
            .expect("compiles");
        let deadline = Instant::now() + std::time::Duration::from_micros(50);
        std::thread::sleep(std::time::Duration::from_micros(100));
        let late = engine.try_inline(&entry, Value::Nil, deadline, None, 0);
        assert_eq!(
            late.expect("final")
                .result
                .expect_err("timed out")
                .code()
                .as_u16(),
            408
        );
    }
}
