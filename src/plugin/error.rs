//! The error type every plugin operation returns, and its mapping to reply codes.

use crate::wire::ErrorCode;

use super::PluginState;

/// Why a plugin operation failed. Each variant maps to one reply code ([`PluginError::code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The input was rejected (missing or mistyped field). Code 400.
    #[error("{0}")]
    BadInput(String),
    /// The per-call deadline passed. Code 408.
    #[error("{0}")]
    Timeout(String),
    /// A size or operation limit tripped. Code 413.
    #[error("{0}")]
    LimitExceeded(String),
    /// The plugin failed while executing. Code 500.
    #[error("{0}")]
    Failed(String),
    /// The plugin could not be loaded or compiled. Code 500.
    #[error("load failed: {0}")]
    Load(String),
    /// The plugin is not in the `Running` state. Code 503.
    #[error("plugin {plugin} is not running (state: {state})")]
    NotRunning {
        /// Plugin id.
        plugin: String,
        /// Its current state.
        state: PluginState,
    },
    /// A lifecycle method was called in a state that does not allow it. Code 500.
    #[error("plugin {plugin}: cannot {action} in state {state}")]
    InvalidTransition {
        /// Plugin id.
        plugin: String,
        /// The refused lifecycle action.
        action: &'static str,
        /// The state it was called in.
        state: PluginState,
    },
    /// The plugin cannot take the request now (saturated). Code 503.
    #[error("{0}")]
    Unavailable(String),
    /// No plugin by that name is registered. Code 503.
    #[error("no plugin named {0}")]
    NotFound(String),
    /// A plugin by that name is already registered. Code 500.
    #[error("a plugin named {0} is already registered")]
    Duplicate(String),
}

impl PluginError {
    /// The error for a reply `code` with `message` (e.g. from another worker or a guest).
    /// Unknown codes become 500.
    pub fn from_code(code: u16, message: String) -> PluginError {
        match ErrorCode::try_from(code) {
            Ok(ErrorCode::BadRequest) => PluginError::BadInput(message),
            Ok(ErrorCode::Timeout) => PluginError::Timeout(message),
            Ok(ErrorCode::LimitExceeded) => PluginError::LimitExceeded(message),
            Ok(ErrorCode::Unavailable) => PluginError::Unavailable(message),
            Ok(ErrorCode::Internal) | Err(_) => PluginError::Failed(message),
        }
    }

    /// The reply code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PluginError::BadInput(_) => ErrorCode::BadRequest,
            PluginError::Timeout(_) => ErrorCode::Timeout,
            PluginError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            PluginError::NotRunning { .. }
            | PluginError::Unavailable(_)
            | PluginError::NotFound(_) => ErrorCode::Unavailable,
            PluginError::Failed(_)
            | PluginError::Load(_)
            | PluginError::InvalidTransition { .. }
            | PluginError::Duplicate(_) => ErrorCode::Internal,
        }
    }
}
