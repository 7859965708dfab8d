//! Native plugins: Rust compiled into the binary, one file each.
//!
//! They are trusted and run inline on the async runtime, so they must not block.
//! [`builtin`] lists every native plugin the worker serves.

pub mod database;
mod discount;
mod echo;

use std::path::Path;
use std::sync::Arc;

pub use database::{DatabaseConfig, DatabasePlugin};
pub use discount::{apply as discount_apply, DiscountNative};
pub use echo::Echo;

use crate::plugin::{AgentPlugin, PluginError, Value};

/// Every native plugin compiled into this binary; `database` reaches the database `database`
/// names (by default a SQLite file in `data_dir`).
pub fn builtin(database: &DatabaseConfig, data_dir: &Path) -> Vec<Arc<dyn AgentPlugin>> {
    vec![
        Arc::new(Echo::new()),
        Arc::new(DiscountNative::new()),
        Arc::new(DatabasePlugin::new(database, data_dir)),
    ]
}

/// Looks up `key` in a map input; a non-map input or a missing key is a 400.
pub fn field<'a>(input: &'a Value, key: &str) -> Result<&'a Value, PluginError> {
    let Value::Map(entries) = input else {
        return Err(PluginError::BadInput(format!(
            "input must be a map with field {key:?}, got {}",
            type_name(input)
        )));
    };
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .ok_or_else(|| PluginError::BadInput(format!("missing field {key:?}")))
}

pub use crate::wire::type_name;
