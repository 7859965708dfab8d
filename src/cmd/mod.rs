//! The commands that have outgrown `main.rs`, one file per group: plugin files run locally
//! (`run`, `test`) and rollouts (`publish`, `promote`, `canary`).

pub(crate) mod local;
pub(crate) mod rollout;
