//! Subject names and plugin-name validation.
//!
//! Every subject the service uses is built here, so `subjects.md` and the code cannot drift
//! apart silently. Plugin names become subject tokens, so they are restricted to
//! `[A-Za-z0-9_-]+` (no dots, wildcards or spaces).
//!
//! Each environment (see `mofa worker --env`) has its own [`Namespace`]: production's subjects
//! begin with `mofa`, another environment's with `mofa-<env>`, so a staging worker never takes
//! a production request (nor answers its Services API) even on the same NATS server. The free
//! functions below are production's.

/// Prefix of the per-plugin request subjects.
pub const EXEC_PREFIX: &str = "mofa.exec";
/// Prefix of result events.
pub const RESULT_EVENT_PREFIX: &str = "mofa.events.result";
/// Prefix of reload events.
pub const RELOAD_EVENT_PREFIX: &str = "mofa.events.reload";
/// Prefix of durable job submissions (the `MOFA_JOBS` stream).
pub const JOBS_PREFIX: &str = "mofa.jobs";
/// Prefix of dead-lettered jobs (the `MOFA_DLQ` stream).
pub const DLQ_PREFIX: &str = "mofa.dlq";
/// Prefix of job results, published as each job finishes.
pub const RESULTS_PREFIX: &str = "mofa.results";
/// Queue group every worker joins on every plugin subject, so requests are load-balanced.
pub const QUEUE_GROUP: &str = "mofa";
/// Service name announced on the NATS Services API (`$SRV.*.mofa`).
pub const SERVICE_NAME: &str = "mofa";

/// The environment a worker follows unless told otherwise.
pub const PRODUCTION: &str = "production";

/// `mofa.exec.<plugin>` (production's)
pub fn exec(plugin: &str) -> String {
    format!("{EXEC_PREFIX}.{plugin}")
}

/// `mofa.events.result.<plugin>` (production's)
pub fn result_event(plugin: &str) -> String {
    format!("{RESULT_EVENT_PREFIX}.{plugin}")
}

/// `mofa.events.reload.<plugin>` (production's)
pub fn reload_event(plugin: &str) -> String {
    format!("{RELOAD_EVENT_PREFIX}.{plugin}")
}

/// The request and event subjects and the Services API name of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `mofa`, or `mofa-<env>`: the first token of every subject, and the service name.
    root: String,
}

impl Namespace {
    /// The namespace of `env` (a name of `[A-Za-z0-9_-]`, checked by the config).
    pub fn of(env: &str) -> Namespace {
        let root = if env == PRODUCTION {
            SERVICE_NAME.to_string()
        } else {
            format!("{SERVICE_NAME}-{env}")
        };
        Namespace { root }
    }

    /// Production's: `mofa.…`.
    pub fn production() -> Namespace {
        Self::of(PRODUCTION)
    }

    /// `<root>.exec.<plugin>`
    pub fn exec(&self, plugin: &str) -> String {
        format!("{}.exec.{plugin}", self.root)
    }

    /// `<root>.events.result.<plugin>`
    pub fn result_event(&self, plugin: &str) -> String {
        format!("{}.events.result.{plugin}", self.root)
    }

    /// `<root>.events.reload.<plugin>`
    pub fn reload_event(&self, plugin: &str) -> String {
        format!("{}.events.reload.{plugin}", self.root)
    }

    /// `<root>.events.reload.>`: every reload event.
    pub fn reload_events(&self) -> String {
        format!("{}.events.reload.>", self.root)
    }

    /// `<root>.events.>`: every event.
    pub fn events(&self) -> String {
        format!("{}.events.>", self.root)
    }

    /// The name workers answer the Services API by: `mofa`, or `mofa-<env>`.
    pub fn service_name(&self) -> &str {
        &self.root
    }
}

/// `mofa.jobs.<plugin>`
pub fn jobs(plugin: &str) -> String {
    format!("{JOBS_PREFIX}.{plugin}")
}

/// `mofa.dlq.<plugin>`
pub fn dlq(plugin: &str) -> String {
    format!("{DLQ_PREFIX}.{plugin}")
}

/// `mofa.results.<job-id>`
pub fn results(job: &str) -> String {
    format!("{RESULTS_PREFIX}.{job}")
}

/// Whether `token` can be one subject token (and a KV key): 1 to 128 of `[A-Za-z0-9_-]`.
pub fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a plugin name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin name {name:?}: names may only contain A-Z, a-z, 0-9, '_' and '-' (1 to 128 characters)")]
pub struct InvalidName {
    /// The refused name.
    pub name: String,
}

/// Checks that `name` can be a plugin name (and so a subject token).
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if is_token(name) {
        Ok(())
    } else {
        Err(InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_safe() {
        for good in ["echo", "discount_native", "a-b", "X9"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a b", "a*", ">", "ü", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(exec("echo"), "mofa.exec.echo");
        assert_eq!(result_event("echo"), "mofa.events.result.echo");
    }

    #[test]
    fn production_keeps_the_mofa_subjects_and_other_environments_get_their_own() {
        let production = Namespace::production();
        assert_eq!(production.exec("echo"), exec("echo"));
        assert_eq!(production.result_event("echo"), result_event("echo"));
        assert_eq!(production.reload_event("echo"), reload_event("echo"));
        assert_eq!(production.service_name(), SERVICE_NAME);
        let staging = Namespace::of("staging");
        assert_eq!(staging.exec("echo"), "mofa-staging.exec.echo");
        assert_eq!(staging.events(), "mofa-staging.events.>");
        assert_eq!(staging.service_name(), "mofa-staging");
    }
}
