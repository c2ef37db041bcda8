//! Gates: an operator's pause or drop of a callback, or of one collection
//! of its tasks (ATF's "task gating").
//!
//! A gate is replicated state. Apply checks it when a task is scheduled
//! (a dropping gate cancels the new task) and when an assignment commits (a
//! gated task is not started, whatever the leader planned before the gate
//! committed). `until` is compared with replicated time only.

use serde::{Deserialize, Serialize};

/// What a gate covers: a whole callback, or one collection of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GateTarget {
    pub callback: String,
    pub collection: Option<String>,
}

impl GateTarget {
    pub fn new(callback: impl Into<String>, collection: Option<String>) -> Self {
        GateTarget { callback: callback.into(), collection }
    }

    /// Whether a task of `callback` in `collection` is inside this gate.
    pub fn covers(&self, callback: &str, collection: Option<&str>) -> bool {
        self.callback == callback && (self.collection.is_none() || self.collection.as_deref() == collection)
    }
}

impl std::fmt::Display for GateTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.collection {
            Some(c) => write!(f, "{}/{c}", self.callback),
            None => f.write_str(&self.callback),
        }
    }
}

/// What a gate does. `Drop` is stricter than `Pause`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GateMode {
    /// Nothing in the gate starts; scheduling goes on; running tasks finish.
    Pause,
    /// Pending and newly scheduled tasks in the gate are cancelled.
    Drop,
}

impl GateMode {
    pub fn name(self) -> &'static str {
        match self {
            GateMode::Pause => "pause",
            GateMode::Drop => "drop",
        }
    }
}

/// A gate as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub target: GateTarget,
    pub mode: GateMode,
    /// When it was set (replicated time, Unix ms).
    pub since_ms: u64,
    /// Log index of the entry that set it: no task it covers starts at a
    /// later index while it stands.
    pub since_index: u64,
    /// When it stops applying (replicated time); `None`: until opened.
    pub until_ms: Option<u64>,
    pub note: String,
}

impl Gate {
    /// Whether the gate applies at replicated time `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }

    /// The reason a task dropped by this gate records.
    pub fn drop_reason(&self) -> String {
        if self.note.is_empty() {
            format!("dropped by gate {}", self.target)
        } else {
            format!("dropped by gate {}: {}", self.target, self.note)
        }
    }
}

/// The strictest active gate among `gates` that covers a task of
/// `callback` in `collection` (a callback's gate covers all its
/// collections; the stricter gate wins).
pub fn strictest<'a>(
    gates: impl IntoIterator<Item = &'a Gate>,
    callback: &str,
    collection: Option<&str>,
    now_ms: u64,
) -> Option<&'a Gate> {
    gates
        .into_iter()
        .filter(|g| g.active(now_ms) && g.target.covers(callback, collection))
        .max_by_key(|g| (g.mode, g.target.collection.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(callback: &str, collection: Option<&str>, mode: GateMode, until_ms: Option<u64>) -> Gate {
        Gate {
            target: GateTarget::new(callback, collection.map(String::from)),
            mode,
            since_ms: 0,
            since_index: 0,
            until_ms,
            note: String::new(),
        }
    }

    #[test]
    fn a_callback_gate_covers_every_collection_and_the_stricter_wins() {
        let gates = [gate("a", None, GateMode::Pause, None), gate("a", Some("x"), GateMode::Drop, None)];
        assert_eq!(strictest(&gates, "a", Some("x"), 0).map(|g| g.mode), Some(GateMode::Drop));
        assert_eq!(strictest(&gates, "a", Some("y"), 0).map(|g| g.mode), Some(GateMode::Pause));
        assert_eq!(strictest(&gates, "a", None, 0).map(|g| g.mode), Some(GateMode::Pause));
        assert!(strictest(&gates, "b", Some("x"), 0).is_none());
        let only_collection = [gate("a", Some("x"), GateMode::Pause, None)];
        assert!(strictest(&only_collection, "a", None, 0).is_none());
        assert!(strictest(&only_collection, "a", Some("y"), 0).is_none());
    }

    #[test]
    fn until_is_exclusive_replicated_time() {
        let g = gate("a", None, GateMode::Pause, Some(100));
        assert!(g.active(99));
        assert!(!g.active(100));
        assert!(strictest([&g], "a", None, 100).is_none());
    }
}
