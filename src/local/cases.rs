//! Test cases kept beside a plugin: `NAME.test.toml` next to `NAME.rhai` or `NAME.wasm`.
//!
//! ```toml
//! sql = ["examples/sales.sql"]   # optional: run (writes allowed) on a fresh SQLite database
//!
//! [[case]]
//! name = "gold customers get 20% off"
//! input = { price = 100, customer_tier = "gold" }
//! output = 80.0
//!
//! [[case]]
//! name = "a price that is not a number"
//! input = { price = "ten" }
//! error = 400
//! message = "price must be a number"   # optional: a part of the error message
//! ```
//!
//! `input_json` and `output_json` take JSON text instead (for `null`, which TOML lacks); a
//! case without an input gets nil. Floats equal within a relative 1e-9. `includes = { status = "approved" }` checks only the
//! fields it names of a map output (for outputs that hold a time or a random number). Numbers compare by value (`80` equals `80.0`). Each case file
//! runs in a fresh [`LocalRunner`] whose `database` plugin is an embedded SQLite database in a
//! new temporary directory, so cases never touch a real database and never see each other's
//! files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::LocalRunner;
use crate::config::WorkerConfig;
use crate::plugin::{PluginError, Value};
use crate::wire;

pub use crate::kinds::{case_file_for, is_case_file};

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// This output (as JSON).
    Output(serde_json::Value),
    /// A map output with at least these fields, of these values.
    Includes(serde_json::Map<String, serde_json::Value>),
    /// An error reply with this code, and a message containing `message` when given.
    Error {
        /// The error code.
        code: u16,
        /// A part of the message.
        message: Option<String>,
    },
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it checks.
    pub name: String,
    /// The request body.
    pub input: Value,
    /// What must come back.
    pub expect: Expect,
}

/// A plugin's case file, read.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// Where it is.
    pub path: PathBuf,
    /// SQL files run before the cases, resolved against the case file's directory.
    pub sql: Vec<PathBuf>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    sql: Vec<String>,
    #[serde(default, rename = "case")]
    cases: Vec<CaseSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    input: Option<toml::Value>,
    input_json: Option<String>,
    output: Option<toml::Value>,
    output_json: Option<String>,
    includes: Option<toml::Table>,
    error: Option<u16>,
    message: Option<String>,
}

impl CaseFile {
    /// Reads and checks a case file.
    pub fn read(path: &Path) -> Result<CaseFile, String> {
        let at = |message: String| format!("{}: {message}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let spec: FileSpec = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
        if spec.cases.is_empty() {
            return Err(at("no [[case]] in it".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let cases = spec
            .cases
            .into_iter()
            .map(|case| case.compile().map_err(&at))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CaseFile {
            path: path.to_path_buf(),
            sql: spec.sql.iter().map(|f| dir.join(f)).collect(),
            cases,
        })
    }
}

impl CaseSpec {
    fn compile(self) -> Result<Case, String> {
        let name = self.name;
        let json = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| format!("case {name:?}: {what} is not JSON: {e}"))
        };
        let input = match (self.input, self.input_json) {
            (Some(_), Some(_)) => {
                return Err(format!("case {name:?}: give input or input_json, not both"))
            }
            (Some(value), None) => wire::from_json(&toml_to_json(value)),
            (None, Some(text)) => wire::from_json(&json("input_json", &text)?),
            (None, None) => Value::Nil,
        };
        if self.message.is_some() && self.error.is_none() {
            return Err(format!("case {name:?}: message goes with error"));
        }
        let expect = match (self.output, self.output_json, self.includes, self.error) {
            (Some(value), None, None, None) => Expect::Output(toml_to_json(value)),
            (None, Some(text), None, None) => Expect::Output(json("output_json", &text)?),
            (None, None, Some(fields), None) => match toml_to_json(toml::Value::Table(fields)) {
                serde_json::Value::Object(fields) => Expect::Includes(fields),
                _ => return Err(format!("case {name:?}: includes must be a table")),
            },
            (None, None, None, Some(code)) => Expect::Error {
                code,
                message: self.message,
            },
            _ => {
                return Err(format!(
                    "case {name:?}: give exactly one of output, output_json, includes or error"
                ))
            }
        };
        Ok(Case {
            name,
            input,
            expect,
        })
    }
}

fn toml_to_json(value: toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case's name.
    pub case: String,
    /// `None` when it passed; what differed otherwise.
    pub failure: Option<String>,
    /// How long the plugin took.
    pub elapsed: Duration,
}

/// Runs `file`'s cases against the plugin in `code`, with `config`'s limits, in a fresh
/// runner with its own temporary data directory. An `Err` is a plugin that does not load or
/// a SQL file that does not run: no case ran.
pub async fn run(
    code: &Path,
    file: &CaseFile,
    config: &WorkerConfig,
) -> Result<Vec<Outcome>, String> {
    let data_dir = std::env::temp_dir().join(format!("mofa-test-{}", nuid::next()));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot make {}: {e}", data_dir.display()))?;
    let outcome = run_in(code, file, config, &data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

async fn run_in(
    code: &Path,
    file: &CaseFile,
    config: &WorkerConfig,
    data_dir: &Path,
) -> Result<Vec<Outcome>, String> {
    let mut database = crate::native::database::DatabaseConfig::default();
    for sql in &file.sql {
        let script = std::fs::read_to_string(sql).map_err(|e| format!("{}: {e}", sql.display()))?;
        let writable = crate::native::database::DatabaseConfig {
            allow_writes: true,
            ..database.clone()
        };
        let db = crate::native::database::Database::open(&writable, data_dir)?;
        db.run_script(script)
            .await
            .map_err(|e| format!("{}: {e}", sql.display()))?;
    }
    database.max_rows = config.database.max_rows;
    let natives = crate::native::builtin(&database, data_dir);
    let runner = LocalRunner::new(config, natives)
        .await
        .map_err(|e| e.to_string())?;
    let plugin = runner.load(code).await.map_err(|e| e.to_string())?;
    let mut outcomes = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let (result, elapsed) = runner.run(&plugin, case.input.clone()).await;
        outcomes.push(Outcome {
            case: case.name.clone(),
            failure: judge(&case.expect, &result),
            elapsed,
        });
    }
    Ok(outcomes)
}

/// Runs the cases beside the plugin in `code` (see [`case_file_for`]) under `config`:
/// `None` when it has no case file, else the case file and each case's outcome. An `Err` is
/// a case file that does not read, or a plugin that does not load.
pub async fn run_beside(
    code: &Path,
    config: &WorkerConfig,
) -> Result<Option<(PathBuf, Vec<Outcome>)>, String> {
    let case_path = case_file_for(code);
    if !case_path.is_file() {
        return Ok(None);
    }
    let file = CaseFile::read(&case_path)?;
    let outcomes = run(code, &file, config)
        .await
        .map_err(|e| format!("no case ran: {e}"))?;
    Ok(Some((case_path, outcomes)))
}

/// Runs the cases beside the plugin in `code` and says whether it may be published: what the
/// record says of them (`None`: no case file), or which cases failed.
pub async fn check(
    code: &Path,
    config: &WorkerConfig,
) -> Result<Option<crate::distribution::TestsRun>, String> {
    let Some((case_path, outcomes)) = run_beside(code, config).await? else {
        return Ok(None);
    };
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|why| format!("{}: {why}", o.case)))
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "not published: {} of {} test cases in {} failed: {}",
            failed.len(),
            outcomes.len(),
            case_path.display(),
            failed.join("; ")
        ));
    }
    Ok(Some(crate::distribution::TestsRun {
        passed: outcomes.len() as u32,
        skipped: false,
    }))
}

/// What is wrong with `result` for `expect`, if anything.
pub fn judge(expect: &Expect, result: &Result<Value, PluginError>) -> Option<String> {
    match (expect, result) {
        (Expect::Output(want), Ok(got)) => {
            let got = wire::to_json(got);
            (!same(want, &got)).then(|| format!("expected {want}, got {got}"))
        }
        (Expect::Includes(want), Ok(got)) => {
            let got = wire::to_json(got);
            let missing: Vec<String> = want
                .iter()
                .filter(|(key, value)| !got.get(key.as_str()).is_some_and(|v| same(value, v)))
                .map(|(key, value)| format!("{key} = {value}"))
                .collect();
            (!missing.is_empty())
                .then(|| format!("expected a map with {}, got {got}", missing.join(", ")))
        }
        (Expect::Output(want), Err(e)) => Some(format!(
            "expected {want}, got error {}: {e}",
            e.code().as_u16()
        )),
        (Expect::Includes(want), Err(e)) => Some(format!(
            "expected a map with {}, got error {}: {e}",
            serde_json::Value::Object(want.clone()),
            e.code().as_u16()
        )),
        (Expect::Error { code, .. }, Ok(got)) => {
            Some(format!("expected error {code}, got {}", wire::to_json(got)))
        }
        (Expect::Error { code, message }, Err(e)) => {
            let text = e.to_string();
            if e.code().as_u16() != *code {
                Some(format!(
                    "expected error {code}, got error {}: {text}",
                    e.code().as_u16()
                ))
            } else if message.as_ref().is_some_and(|m| !text.contains(m.as_str())) {
                Some(format!(
                    "expected error {code} with a message containing {:?}, got: {text}",
                    message.as_deref().unwrap_or_default()
                ))
            } else {
                None
            }
        }
    }
}

/// How far apart, relative to the larger, two floats may be and still be equal: a sum of
/// decimal amounts (`5175.62`) comes out of binary floating point as `5175.620000000001`.
const FLOAT_TOLERANCE: f64 = 1e-9;

/// JSON equality where numbers compare by value, so `80` (an integer in TOML) equals the
/// `80.0` a script returns, and floats within [`FLOAT_TOLERANCE`] are equal.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= FLOAT_TOLERANCE * x.abs().max(y.abs()),
                _ => false,
            },
        },
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<CaseFile, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.test.toml");
        std::fs::write(&path, text).expect("written");
        CaseFile::read(&path)
    }

    #[test]
    fn cases_read_inputs_outputs_and_errors() {
        let cases = file(
            r#"
            [[case]]
            name = "a"
            input = { price = 100 }
            output = 80

            [[case]]
            name = "b"
            input_json = 'null'
            output_json = '{"x": null}'

            [[case]]
            name = "c"
            error = 400
            message = "price"
            "#,
        )
        .expect("reads");
        assert_eq!(cases.cases.len(), 3);
        assert_eq!(cases.cases[1].input, Value::Nil);
        assert_eq!(cases.cases[2].input, Value::Nil);
        assert_eq!(
            cases.cases[2].expect,
            Expect::Error {
                code: 400,
                message: Some("price".into())
            }
        );
    }

    #[test]
    fn a_case_must_say_what_it_expects_once() {
        let both = file("[[case]]\nname = \"x\"\noutput = 1\nerror = 400\n").expect_err("both");
        assert!(both.contains("exactly one of output"), "{both}");
        let stray =
            file("[[case]]\nname = \"x\"\noutput = 1\nmessage = \"m\"\n").expect_err("stray");
        assert!(stray.contains("message goes with error"), "{stray}");
        let none = file("[[case]]\nname = \"x\"\n").expect_err("none");
        assert!(none.contains("exactly one of output"), "{none}");
        let unknown = file("[[case]]\nname = \"x\"\noutput = 1\nexpected = 2\n").expect_err("typo");
        assert!(unknown.contains("unknown field"), "{unknown}");
        assert!(file("").expect_err("empty").contains("no [[case]]"));
    }

    #[test]
    fn numbers_compare_by_value_and_errors_by_code_and_message() {
        let want = Expect::Output(serde_json::json!({"total": 80, "items": [1, 2.5]}));
        let got = wire::from_json(&serde_json::json!({"total": 80.0, "items": [1.0, 2.5]}));
        assert_eq!(judge(&want, &Ok(got)), None);
        let sum =
            wire::from_json(&serde_json::json!({"total": 80.00000000000001, "items": [1.0, 2.5]}));
        assert_eq!(
            judge(&want, &Ok(sum)),
            None,
            "a float rounding error is no difference"
        );
        let wrong = wire::from_json(&serde_json::json!({"total": 80.001, "items": [1.0, 2.5]}));
        assert!(judge(&want, &Ok(wrong)).is_some());
        let error = Expect::Error {
            code: 400,
            message: Some("number".into()),
        };
        let bad = PluginError::BadInput("price must be a number".into());
        assert_eq!(judge(&error, &Err(bad)), None);
        let other = PluginError::BadInput("something else".into());
        assert!(judge(&error, &Err(other)).is_some());
        let includes = Expect::Includes(
            serde_json::json!({"status": "approved"})
                .as_object()
                .cloned()
                .expect("a map"),
        );
        let approved = wire::from_json(&serde_json::json!({"status": "approved", "t": 17}));
        assert_eq!(judge(&includes, &Ok(approved)), None);
        let pending = wire::from_json(&serde_json::json!({"status": "pending"}));
        assert!(judge(&includes, &Ok(pending)).is_some());
        let failed = PluginError::Failed("boom".into());
        assert!(judge(&error, &Err(failed))
            .expect("code differs")
            .contains("500"));
    }

    #[test]
    fn case_files_sit_beside_their_code() {
        assert_eq!(
            case_file_for(Path::new("plugins/discount.rhai")),
            PathBuf::from("plugins/discount.test.toml")
        );
        assert!(is_case_file(Path::new("plugins/x.test.toml")));
        assert!(!is_case_file(Path::new("plugins/x.toml")));
    }
}
