//! Rule sets: a script whose top level defines a `rules` array is served as a rule engine.
//!
//! ```rhai
//! let rules = [
//!     #{ name: "spam", priority: "high",
//!        condition: |m| contains_any(m.text, ["buy now", "free money"]),
//!        action: |m| #{ action: "block", reason: "spam" } },
//!     #{ name: "profanity", priority: "critical",
//!        condition: |m| has_profanity(m.text),
//!        action: |m| #{ action: "flag", reason: "profanity" } },
//! ];
//! ```
//!
//! The top level runs once, when the script loads, and the closures are kept. Each request runs
//! the conditions in priority order (`critical`, `high`, `medium`, `low`; file order within a
//! priority) on the input; the first that returns `true` wins and its action's result is the
//! reply, with `rule` (the rule's name) and `matched: true` added to a map result (any other
//! result comes back as `{rule, matched: true, result}`). When no condition holds the reply is
//! `{rule: (), matched: false}`. A condition that throws, or returns anything but a bool, is an
//! error reply naming the rule. A function the script also defines (such as the `evaluate` of
//! older examples, even when the script ends by naming it) is not called: the engine does the
//! evaluation. Only `fn execute` takes precedence over `rules`.

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, AST};

use crate::plugin::PluginError;

/// The variable a rule set's top level defines.
pub const RULES_VARIABLE: &str = "rules";

/// A rule's priority, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Critical,
    High,
    Medium,
    Low,
}

impl Priority {
    const NAMES: [(&'static str, Priority); 4] = [
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("medium", Priority::Medium),
        ("low", Priority::Low),
    ];

    fn parse(text: &str) -> Option<Priority> {
        Self::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, p)| *p)
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, added to the reply as `rule`.
    pub name: String,
    /// Its priority.
    pub priority: Priority,
    condition: FnPtr,
    action: FnPtr,
}

/// The rules of a script, in evaluation order.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// Why a request to a rule set failed: the rule it was at, and the script error.
pub enum RuleError {
    /// The script raised an error (a limit, the deadline, a throw) in this rule.
    Script(String, Box<EvalAltResult>),
    /// A condition returned something other than a bool.
    NotBool(String, &'static str),
}

impl RuleSet {
    /// The rule set in `rules` (the value of the top level's `rules` variable), checked: each
    /// entry a map with a string `name`, a known `priority`, and `condition` and `action`
    /// closures.
    pub fn from_array(script: &str, rules: rhai::Array) -> Result<RuleSet, PluginError> {
        let mut parsed = Vec::with_capacity(rules.len());
        for (index, item) in rules.into_iter().enumerate() {
            let at = |what: String| PluginError::Load(format!("{script}: rules[{index}]: {what}"));
            let map = item.try_cast::<Map>().ok_or_else(|| {
                at("a rule must be a map #{ name, priority, condition, action }".into())
            })?;
            let name = map
                .get("name")
                .and_then(|n| n.clone().into_immutable_string().ok())
                .ok_or_else(|| at("`name` must be a string".into()))?
                .to_string();
            let at = |what: String| {
                PluginError::Load(format!("{script}: rule {name:?} (rules[{index}]): {what}"))
            };
            let priority = match map.get("priority") {
                Some(p) => p
                    .clone()
                    .into_immutable_string()
                    .ok()
                    .and_then(|p| Priority::parse(&p))
                    .ok_or_else(|| {
                        at(format!(
                            "`priority` is {p}; it must be one of \"critical\", \"high\", \"medium\", \"low\""
                        ))
                    })?,
                None => return Err(at("`priority` is missing (\"critical\", \"high\", \"medium\" or \"low\")".into())),
            };
            let closure = |key: &str| {
                map.get(key)
                    .and_then(|f| f.clone().try_cast::<FnPtr>())
                    .ok_or_else(|| at(format!("`{key}` must be a closure, e.g. |message| ...")))
            };
            parsed.push(Rule {
                condition: closure("condition")?,
                action: closure("action")?,
                name,
                priority,
            });
        }
        // Stable: file order stays within a priority.
        parsed.sort_by_key(|r| r.priority);
        Ok(RuleSet { rules: parsed })
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs the conditions on `input` in order and the first matching rule's action.
    pub fn evaluate(
        &self,
        engine: &Engine,
        ast: &AST,
        input: Dynamic,
    ) -> Result<Dynamic, RuleError> {
        for rule in &self.rules {
            let holds = rule
                .condition
                .call::<Dynamic>(engine, ast, (input.clone(),))
                .map_err(|e| RuleError::Script(rule.name.clone(), e))?;
            let holds = holds
                .as_bool()
                .map_err(|type_name| RuleError::NotBool(rule.name.clone(), type_name))?;
            if !holds {
                continue;
            }
            let result = rule
                .action
                .call::<Dynamic>(engine, ast, (input,))
                .map_err(|e| RuleError::Script(rule.name.clone(), e))?;
            let mut reply = match result.try_cast_result::<Map>() {
                Ok(map) => map,
                Err(other) => {
                    let mut map = Map::new();
                    map.insert("result".into(), other);
                    map
                }
            };
            reply.insert("rule".into(), rule.name.clone().into());
            reply.insert("matched".into(), true.into());
            return Ok(reply.into());
        }
        let mut reply = Map::new();
        reply.insert("rule".into(), Dynamic::UNIT);
        reply.insert("matched".into(), false.into());
        Ok(reply.into())
    }
}
