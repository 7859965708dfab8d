//! Tools: scripts an LLM can call.
//!
//! A tool script's top level builds a `tool` map and either ends with
//! `#{ tool: tool, execute: execute }` or just defines `fn execute(args)` beside it:
//!
//! ```rhai
//! let tool = #{
//!     name: "get_weather",
//!     description: "Current weather for a city",
//!     parameters: #{
//!         type: "object",
//!         properties: #{ city: #{ type: "string" } },
//!         required: ["city"]
//!     }
//! };
//! fn execute(args) { #{ city: args.city, temperature: 21 } }
//! #{ tool: tool, execute: execute }
//! ```
//!
//! The tool is served under its `name` (not the file's), its description and schema travel in
//! the plugin's metadata (and so in `$SRV.INFO`), and every request's arguments are validated
//! against the schema, with the `jsonschema` crate, before the script runs.

use std::sync::Arc;

use rhai::{Dynamic, Map, Scope};

use crate::plugin::{PluginError, ToolSpec, Value};

/// The variable a tool script's top level defines.
pub const TOOL_VARIABLE: &str = "tool";

/// A tool's description and its compiled argument schema.
#[derive(Clone)]
pub struct Tool {
    /// Name, description and schema.
    pub spec: ToolSpec,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("spec", &self.spec).finish()
    }
}

/// The tool map of a script, if it is a tool: the `tool` entry of the value its top level
/// returns, that value itself when it has `name` and `parameters`, or its `tool` variable.
pub fn find(result: &Dynamic, scope: &Scope) -> Option<Dynamic> {
    if let Some(map) = result.read_lock::<Map>() {
        if let Some(tool) = map.get(TOOL_VARIABLE) {
            return Some(tool.clone());
        }
        if map.contains_key("name") && map.contains_key("parameters") {
            return Some(result.clone());
        }
    }
    scope.get(TOOL_VARIABLE).filter(|v| v.is_map()).cloned()
}

impl Tool {
    /// Checks a tool map: a valid plugin name, a description, and a valid JSON Schema of
    /// `type: "object"` as `parameters`. Every problem is a load error saying which.
    pub fn from_map(script: &str, tool: Dynamic) -> Result<Tool, PluginError> {
        let fail = |what: String| PluginError::Load(format!("{script}: tool: {what}"));
        let map = tool.try_cast::<Map>().ok_or_else(|| {
            fail("`tool` must be a map #{ name, description, parameters }".into())
        })?;
        let text = |key: &str| {
            map.get(key)
                .and_then(|v| v.clone().into_immutable_string().ok())
                .map(|s| s.to_string())
                .filter(|s| !s.trim().is_empty())
        };
        let name = text("name").ok_or_else(|| fail("`name` is missing (a string)".into()))?;
        crate::subjects::validate_name(&name).map_err(|e| fail(format!("`name`: {e}")))?;
        let description = text("description").ok_or_else(|| {
            fail(format!(
                "`description` is missing: say what {name} does, for the model choosing it"
            ))
        })?;
        let parameters = map
            .get("parameters")
            .ok_or_else(|| fail("`parameters` is missing (a JSON Schema object)".into()))?;
        let parameters: serde_json::Value = rhai::serde::from_dynamic(parameters)
            .map_err(|e| fail(format!("`parameters` is not JSON: {e}")))?;
        if parameters.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(fail(
                "`parameters` must be a JSON Schema with type: \"object\" (tools take named arguments)"
                    .into(),
            ));
        }
        let validator = jsonschema::validator_for(&parameters).map_err(|e| {
            fail(format!(
                "`parameters` is not a valid JSON Schema: {e} (at {})",
                e.instance_path()
            ))
        })?;
        Ok(Tool {
            spec: ToolSpec {
                name,
                description,
                parameters,
            },
            validator: Arc::new(validator),
        })
    }

    /// Validates a request's arguments: a 400 naming the field and the rule it broke.
    pub fn check(&self, input: &Value) -> Result<(), PluginError> {
        let json = crate::wire::to_json(input);
        let first = self.validator.iter_errors(&json).next();
        match first {
            None => Ok(()),
            Some(error) => {
                let at = error.instance_path().as_str();
                let field = if at.is_empty() {
                    "arguments".to_string()
                } else {
                    format!("argument {}", at.trim_start_matches('/').replace('/', "."))
                };
                Err(PluginError::BadInput(format!(
                    "{field}: {error} (schema rule `{}` of tool {})",
                    error.kind().keyword(),
                    self.spec.name
                )))
            }
        }
    }
}
