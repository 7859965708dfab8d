//! Compiled modules kept on disk between runs, so a restarted worker does not compile its
//! modules again (Cranelift takes tens to hundreds of milliseconds per module; loading a
//! compiled image takes well under one).
//!
//! A file is named by the SHA-256 of the module's bytes and a hash of everything in the engine
//! that compiled code depends on (wasmtime's `precompile_compatibility_hash`: its version and
//! settings), so a changed module, a changed limit or a new wasmtime never loads a stale image;
//! wasmtime checks the file's header again on load. A file that does not load is removed and
//! the module compiled again. The directory is created private to the worker's user: a
//! compiled image is native code, so whoever can write this directory can run code in the
//! worker, as whoever can write its binary can.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{Engine, Module};

/// Where compiled images go, and what happened so far.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    /// The engine's compatibility hash, part of every file name.
    engine: u64,
    /// Modules loaded from disk.
    pub(crate) hits: AtomicU64,
    /// Modules compiled (and then written).
    pub(crate) compiled: AtomicU64,
}

impl DiskCache {
    /// A cache in `dir` (created when the first image is written) for `engine`.
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine: hasher.finish(),
            hits: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
        }
    }

    fn file(&self, sha: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{:016x}.cwasm", hex::encode(sha), self.engine))
    }

    /// The module with SHA-256 `sha`: its compiled image from disk, else `compile()`d and
    /// written for the next start.
    pub(crate) fn module(
        &self,
        engine: &Engine,
        sha: &[u8; 32],
        compile: impl FnOnce() -> wasmtime::Result<Module>,
    ) -> wasmtime::Result<Module> {
        let file = self.file(sha);
        // Read into memory rather than mapped (`deserialize_file`): a mapped file truncated
        // by someone else would crash the worker with SIGBUS.
        if let Ok(image) = std::fs::read(&file) {
            // SAFETY: the file is an image `Module::serialize` wrote for an engine with this
            // compatibility hash (its name says so) into the worker's private cache directory,
            // and wasmtime checks its header before use; see the module doc for who can write
            // there.
            match unsafe { Module::deserialize(engine, &image) } {
                Ok(module) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(module);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cached compiled module unusable; compiling again");
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        let module = compile()?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.write(&file, &module) {
            tracing::debug!(file = %file.display(), error = %e, "compiled module not cached on disk");
        }
        Ok(module)
    }

    /// Writes `module`'s image to `file` atomically (a temporary file renamed into place), so
    /// a worker starting meanwhile never reads half an image.
    fn write(&self, file: &Path, module: &Module) -> Result<(), String> {
        create_private_dir(&self.dir).map_err(|e| e.to_string())?;
        let image = module.serialize().map_err(|e| e.to_string())?;
        // Named for this write alone: two runtimes writing the same module at once must not
        // write into one temporary file.
        let temporary = file.with_extension(format!("tmp-{}", nuid::next().as_str()));
        std::fs::write(&temporary, image).map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, file).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            e.to_string()
        })
    }
}

/// Creates `dir` (and its parents) readable and writable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
