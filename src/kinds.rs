//! The kinds of plugin that arrive as code, from the plugins directory or the plugins bucket, in
//! one table.
//!
//! Discovery at worker start, the bucket follower, `mofa publish` and `mofa watch` all read
//! [`KINDS`]: where a kind's files are (extension, sidecar file, subdirectories), how its code is
//! carried in a bucket record (text or bytes), whether its calls run on the sandbox pool, and
//! how a plugin is built from its code. Adding a kind is one entry here. Native plugins are
//! compiled in, never arrive as code, and so are not in the table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plugin::{AgentPlugin, PluginError, PluginKind};
use crate::rhai::{RhaiPlugin, ScriptEngine, StateMap};
use crate::wasm::{Manifest, WasmPlugin, WasmRuntime};

/// What building a plugin may use: the worker's engines and the new plugin's state map.
#[derive(Clone)]
pub struct Runtimes {
    /// The Rhai engine.
    pub engine: Arc<ScriptEngine>,
    /// The wasmtime runtime.
    pub wasm: Arc<WasmRuntime>,
    /// The state map a script starts with (see `reload.preserve_state`).
    pub state: StateMap,
}

/// The engines the sandboxed kinds build with, made once from a worker's settings: one sandbox
/// thread pool, the Rhai engine and the wasmtime runtime on it, and `call_plugin` wired to a
/// caller. A worker and a [`crate::local::LocalRunner`] both make theirs here, so a plugin
/// built by `mofa test` or before `mofa publish` is built exactly as a worker builds it.
pub struct Engines {
    /// The Rhai engine.
    pub engine: Arc<ScriptEngine>,
    /// The wasmtime runtime.
    pub wasm: Arc<WasmRuntime>,
}

impl Engines {
    /// The engines for `rhai` and `wasm` settings on a pool of `sandbox_threads` (0: the
    /// default size), compiled modules also kept in `disk_cache` when given.
    ///
    /// ```no_run
    /// # fn engines() -> Result<(), mofa_bus::plugin::PluginError> {
    /// use mofa_bus::kinds::Engines;
    ///
    /// let engines = Engines::new(Default::default(), Default::default(), 0, None)?;
    /// let runtimes = engines.runtimes(Default::default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(
        rhai: crate::rhai::RhaiConfig,
        wasm: crate::wasm::WasmConfig,
        sandbox_threads: usize,
        disk_cache: Option<PathBuf>,
    ) -> Result<Engines, PluginError> {
        let pool = crate::plugin::SandboxPool::new(sandbox_threads);
        let engine = Arc::new(ScriptEngine::with_pool(rhai, pool.clone()));
        let wasm = WasmRuntime::new(wasm, pool)?;
        if let Some(dir) = disk_cache {
            wasm.set_disk_cache(dir);
        }
        Ok(Engines { engine, wasm })
    }

    /// Wires `call_plugin` of both kinds to `caller` (a script's calls run on the current
    /// tokio runtime's handle). Call it inside a tokio runtime.
    pub fn set_caller(&self, caller: Arc<dyn crate::plugin::PluginCaller>) {
        self.wasm.set_caller(caller.clone());
        self.engine
            .set_caller(caller, tokio::runtime::Handle::current());
    }

    /// What a plugin is built with, starting from `state`.
    pub fn runtimes(&self, state: StateMap) -> Runtimes {
        Runtimes {
            engine: self.engine.clone(),
            wasm: self.wasm.clone(),
            state,
        }
    }
}

/// Builds `code` as its `kind` says, off the async threads: a script's top level runs while it
/// builds, and a module compiles.
pub async fn build(
    kind: &'static Kind,
    code: Code,
    runtimes: Runtimes,
) -> Result<Arc<dyn AgentPlugin>, PluginError> {
    tokio::task::spawn_blocking(move || (kind.build)(code, runtimes))
        .await
        .unwrap_or_else(|e| Err(PluginError::Load(format!("build task failed: {e}"))))
}

/// A plugin's code, as read from its files or from a bucket record.
#[derive(Debug, Clone)]
pub struct Code {
    /// The plugin's name (file stem, or bucket key).
    pub name: String,
    /// The code itself: script text or module bytes.
    pub body: Vec<u8>,
    /// The text of the sidecar file, when the kind has one and it exists (a module's manifest).
    pub sidecar: Option<String>,
    /// A version label (a bucket record's).
    pub version: Option<String>,
    /// Where it came from, for messages: a path, or `revision N`.
    pub origin: String,
}

/// One kind of plugin code.
pub struct Kind {
    /// The plugin kind.
    pub kind: PluginKind,
    /// File extension of the code.
    pub extension: &'static str,
    /// Extension of a file beside the code that belongs to it, if any.
    pub sidecar: Option<&'static str>,
    /// Subdirectories of the plugins directory searched besides the directory itself.
    pub dirs: &'static [&'static str],
    /// The code is UTF-8 text (a record carries it as `source`); otherwise bytes (`module`,
    /// or an Object Store object when large).
    pub text: bool,
    /// Calls run on the sandbox pool under a deadline (otherwise inline).
    pub sandboxed: bool,
    /// Builds the plugin. Blocking (a script is compiled and its top level run here): call it
    /// off the async threads.
    pub build: fn(Code, Runtimes) -> Result<Arc<dyn AgentPlugin>, PluginError>,
    /// The name the code is served under, for publishing: the file's name, or what the code
    /// declares (a tool's `name`). Blocking.
    pub served_name: fn(&Code) -> String,
}

/// Every kind that arrives as code.
pub static KINDS: [Kind; 2] = [
    Kind {
        kind: PluginKind::Rhai,
        extension: "rhai",
        sidecar: None,
        dirs: &["tools", "rules", "scripts"],
        text: true,
        sandboxed: true,
        build: build_rhai,
        served_name: rhai_served_name,
    },
    Kind {
        kind: PluginKind::Wasm,
        extension: "wasm",
        sidecar: Some("toml"),
        dirs: &[],
        text: false,
        sandboxed: true,
        build: build_wasm,
        served_name: |code| code.name.clone(),
    },
];

fn build_rhai(code: Code, runtimes: Runtimes) -> Result<Arc<dyn AgentPlugin>, PluginError> {
    let source = String::from_utf8(code.body)
        .map_err(|_| PluginError::Load(format!("{}: script is not UTF-8", code.origin)))?;
    let entry = runtimes
        .engine
        .compile_as(&code.name, &source, &code.origin)?;
    let mut plugin = RhaiPlugin::new(&code.name, source, runtimes.engine)
        .with_state(runtimes.state)
        .with_description(format!("Rhai script {}", code.origin))
        .with_entry(entry);
    if let Some(version) = code.version {
        plugin = plugin.with_version(version);
    }
    Ok(Arc::new(plugin))
}

/// A tool is published under its tool name; any other script (or one that does not compile:
/// the workers will say why) under its file name.
fn rhai_served_name(code: &Code) -> String {
    let engine = ScriptEngine::with_pool(
        crate::rhai::RhaiConfig::default(),
        crate::plugin::SandboxPool::new(1),
    );
    std::str::from_utf8(&code.body)
        .ok()
        .and_then(|source| engine.compile(&code.name, source).ok())
        .and_then(|entry| entry.tool.map(|t| t.spec.name))
        .unwrap_or_else(|| code.name.clone())
}

fn build_wasm(code: Code, runtimes: Runtimes) -> Result<Arc<dyn AgentPlugin>, PluginError> {
    let manifest = match &code.sidecar {
        Some(text) => Manifest::from_toml(text)
            .map_err(|e| PluginError::Load(format!("{}: manifest: {e}", code.origin)))?,
        None => Manifest::default(),
    };
    let mut plugin = WasmPlugin::new(&code.name, code.body, manifest, runtimes.wasm);
    if let Some(version) = code.version {
        plugin = plugin.with_version(version);
    }
    Ok(Arc::new(plugin))
}

/// Checks that code keyed `name` in the plugins bucket built a plugin served as `name`: `mofa
/// publish` keys a tool by its tool name, so a record whose plugin names itself otherwise was
/// not made by it.
pub fn check_built_name(name: &str, built: &str) -> Result<(), PluginError> {
    if built == name {
        return Ok(());
    }
    Err(PluginError::Load(format!(
        "bucket key {name:?} holds a plugin named {built:?}; `mofa publish` keys a tool by its \
         tool name"
    )))
}

/// The kind of `kind`, if plugins of that kind arrive as code.
pub fn of(kind: PluginKind) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The kind whose code files end like `path`.
pub fn for_path(path: &Path) -> Option<&'static Kind> {
    let extension = path.extension()?.to_str()?;
    KINDS.iter().find(|k| k.extension == extension)
}

/// Whether calls to plugins of `kind` run on the sandbox pool.
pub fn is_sandboxed(kind: PluginKind) -> bool {
    of(kind).is_some_and(|k| k.sandboxed)
}

/// The ending of a plugin's test-case file, kept beside its code (`discount.test.toml` beside
/// `discount.rhai`; see [`crate::local::cases`]). It is not a sidecar: a worker never reads it.
pub const CASES_SUFFIX: &str = ".test.toml";

/// The case file of the plugin whose code is in `code`.
pub fn case_file_for(code: &Path) -> PathBuf {
    code.with_extension(&CASES_SUFFIX[1..])
}

/// The code file a case file belongs to: the file of any kind beside it with its name.
pub fn code_for_case(case: &Path) -> Option<PathBuf> {
    let name = case.file_name()?.to_str()?.strip_suffix(CASES_SUFFIX)?;
    KINDS
        .iter()
        .map(|k| case.with_file_name(format!("{name}.{}", k.extension)))
        .find(|code| code.is_file())
}

/// Whether `path` is a test-case file.
pub fn is_case_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(CASES_SUFFIX))
}

/// The code file a changed `path` stands for: the file itself, or the code file beside a
/// sidecar (editing `x.toml` stands for `x.wasm`); a test-case file stands for none.
pub fn code_file(path: &Path) -> Option<PathBuf> {
    if is_case_file(path) {
        return None;
    }
    let extension = path.extension()?.to_str()?;
    KINDS.iter().find_map(|k| {
        if k.extension == extension {
            Some(path.to_path_buf())
        } else if k.sidecar == Some(extension) {
            Some(path.with_extension(k.extension))
        } else {
            None
        }
    })
}

/// The directories plugin files are looked for in: `dir` and the kinds' subdirectories of it.
pub fn search_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.to_path_buf()];
    for sub in KINDS.iter().flat_map(|k| k.dirs.iter()) {
        let path = dir.join(sub);
        if !dirs.contains(&path) {
            dirs.push(path);
        }
    }
    dirs
}

/// Every code file in `dir` and its kinds' subdirectories, sorted; unreadable directories are
/// skipped (a missing `tools/` is normal).
pub fn code_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = search_dirs(dir)
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| for_path(p).is_some() && p.is_file())
        .collect();
    files.sort();
    files
}

/// Reads a code file (and its sidecar): the kind and the code, named after the file stem.
pub fn read(path: &Path) -> Result<(&'static Kind, Code), PluginError> {
    let origin = path.display().to_string();
    let load = |message: String| PluginError::Load(format!("{origin}: {message}"));
    let kind = for_path(path).ok_or_else(|| {
        load(format!(
            "not a plugin file (plugin files end in {})",
            KINDS
                .iter()
                .map(|k| format!(".{}", k.extension))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| load("file name is not UTF-8".into()))?;
    crate::subjects::validate_name(name).map_err(|e| load(e.to_string()))?;
    let body = std::fs::read(path).map_err(|e| load(e.to_string()))?;
    let sidecar = match kind.sidecar {
        Some(extension) => {
            let sidecar = path.with_extension(extension);
            match std::fs::read_to_string(&sidecar) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(load(format!("{}: {e}", sidecar.display()))),
            }
        }
        None => None,
    };
    Ok((
        kind,
        Code {
            name: name.to_string(),
            body,
            sidecar,
            version: None,
            origin,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_kind_and_sidecars_to_their_code_file() {
        assert_eq!(
            for_path(Path::new("p/x.rhai")).map(|k| k.kind),
            Some(PluginKind::Rhai)
        );
        assert_eq!(
            for_path(Path::new("p/x.wasm")).map(|k| k.kind),
            Some(PluginKind::Wasm)
        );
        assert!(for_path(Path::new("p/x.toml")).is_none());
        assert_eq!(
            code_file(Path::new("p/x.toml")),
            Some(PathBuf::from("p/x.wasm"))
        );
        assert_eq!(
            code_file(Path::new("p/x.rhai")),
            Some(PathBuf::from("p/x.rhai"))
        );
        assert_eq!(code_file(Path::new("p/.x.rhai.swp")), None);
        assert_eq!(code_file(Path::new("p/x.test.toml")), None);
        assert_eq!(code_file(Path::new("p/x.rhai~")), None);
        assert!(is_sandboxed(PluginKind::Rhai) && is_sandboxed(PluginKind::Wasm));
        assert!(!is_sandboxed(PluginKind::Native));
    }

    #[test]
    fn files_are_found_in_the_kinds_subdirectories_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["a.rhai", "b.wasm", "b.toml", "rules/r.rhai", "other/o.rhai"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, "x").expect("file");
        }
        let found: Vec<String> = code_files(dir.path())
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("inside")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(found, ["a.rhai", "b.wasm", "rules/r.rhai"]);
    }
}
