//! The plugin state machine.
//!
//! ```text
//! Unloaded --load--> Loading --ok--> Loaded --start--> Running --stop--> Stopped
//!     ^                 |              |  ^                                 |
//!     |                 +--fail--> Error  +--------------start--------------+
//!     +------------------------unload (from Loaded, Stopped, Error)---------+
//! ```
//! `init` is allowed once loaded (it keeps the state `Loaded`). Any failing lifecycle step
//! moves the plugin to `Error`, from which it can only be unloaded.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

/// Where a plugin is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Registered, nothing loaded.
    Unloaded,
    /// `load` is running.
    Loading,
    /// Loaded (and possibly initialised), not serving.
    Loaded,
    /// Serving requests.
    Running,
    /// Was running, stopped.
    Stopped,
    /// A lifecycle step failed.
    Error,
}

/// A lifecycle action, for transition checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `load`
    Load,
    /// `init`
    Init,
    /// `start`
    Start,
    /// `stop`
    Stop,
    /// `unload`
    Unload,
}

impl Lifecycle {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Load => "load",
            Lifecycle::Init => "init",
            Lifecycle::Start => "start",
            Lifecycle::Stop => "stop",
            Lifecycle::Unload => "unload",
        }
    }
}

impl PluginState {
    /// Whether `action` may be taken in this state.
    pub fn allows(self, action: Lifecycle) -> bool {
        use PluginState::*;
        matches!(
            (action, self),
            (Lifecycle::Load, Unloaded)
                | (Lifecycle::Init, Loaded)
                | (Lifecycle::Start, Loaded | Stopped)
                | (Lifecycle::Stop, Running)
                | (Lifecycle::Unload, Loaded | Stopped | Error)
        )
    }

    /// The state after `action` succeeds.
    pub fn after(action: Lifecycle) -> PluginState {
        match action {
            Lifecycle::Load | Lifecycle::Init => PluginState::Loaded,
            Lifecycle::Start => PluginState::Running,
            Lifecycle::Stop => PluginState::Stopped,
            Lifecycle::Unload => PluginState::Unloaded,
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> PluginState {
        use PluginState::*;
        [Unloaded, Loading, Loaded, Running, Stopped, Error]
            .get(usize::from(v))
            .copied()
            .unwrap_or(Error)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Unloaded => "unloaded",
            PluginState::Loading => "loading",
            PluginState::Loaded => "loaded",
            PluginState::Running => "running",
            PluginState::Stopped => "stopped",
            PluginState::Error => "error",
        }
    }
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state readable without a lock on the request path.
#[derive(Debug)]
pub(crate) struct AtomicState(AtomicU8);

impl AtomicState {
    pub(crate) fn new(state: PluginState) -> Self {
        Self(AtomicU8::new(state.to_u8()))
    }

    pub(crate) fn get(&self) -> PluginState {
        PluginState::from_u8(self.0.load(Ordering::Acquire))
    }

    pub(crate) fn set(&self, state: PluginState) {
        self.0.store(state.to_u8(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions_are_allowed() {
        use Lifecycle::*;
        use PluginState::*;
        assert!(Unloaded.allows(Load));
        assert!(!Unloaded.allows(Start));
        assert!(!Loading.allows(Start));
        assert!(Loaded.allows(Init));
        assert!(Loaded.allows(Start));
        assert!(Running.allows(Stop));
        assert!(!Running.allows(Unload));
        assert!(!Running.allows(Load));
        assert!(Stopped.allows(Start));
        assert!(Stopped.allows(Unload));
        assert!(Error.allows(Unload));
        assert!(!Error.allows(Start));
    }

    #[test]
    fn atomic_state_round_trips_every_state() {
        use PluginState::*;
        let s = AtomicState::new(Unloaded);
        for st in [Unloaded, Loading, Loaded, Running, Stopped, Error] {
            s.set(st);
            assert_eq!(s.get(), st);
        }
    }
}
