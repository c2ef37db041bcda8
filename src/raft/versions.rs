//! Feature levels at run time: the cluster's active level (as this node's
//! state machine applied it), the level each peer reports, and the alarm a
//! node raises when a peer sends it an entry it cannot decode.
//!
//! Peers report their level (and version) in their answer to the clock
//! probe every node sends every member about once a second
//! (`consensus::timekeeper`). A 0.1.0 node's answer has no level: it
//! counts as [`LEVEL_0_1_0`]. See [`crate::domain::feature`] for the
//! levels and DESIGN.md, "Feature levels", for the rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::feature::{FeatureLevel, LEVEL_0_1_0, SUPPORTED};

/// This binary's version, as peers and `cluster status` see it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DROVER_COMMIT"), ")");

/// Header on node-to-node messages: the sender's supported level.
pub const LEVEL_HEADER: &str = "x-drover-level";

/// A peer's report counts for raising the level only if this recent
/// (peers are probed every second): a node restarted on another binary
/// reports again within it. `FinalizeUpgrade` asks every member afresh.
pub const REPORT_FRESH: Duration = Duration::from_secs(3);

/// What a peer last said of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its highest level ([`LEVEL_0_1_0`] if it reported none).
    pub level: FeatureLevel,
    /// Its version; empty if it reported none (0.1.0).
    pub version: String,
    /// How long ago (at the time of the call that returned it).
    pub age: Duration,
}

/// Shared by the state machine (publishes the active level), the log
/// store (seals records from level 2 on), the timekeeper (records
/// reports), the services and the proposer (check levels). Cheap to clone.
#[derive(Clone)]
pub struct Versions {
    inner: Arc<Inner>,
}

struct Inner {
    active: watch::Sender<FeatureLevel>,
    /// Reports per peer. A std mutex: short sections, no I/O under it.
    peers: Mutex<HashMap<u64, (Instant, FeatureLevel, String)>>,
    /// Set (once) when a peer sent an entry this binary cannot decode.
    too_new: watch::Sender<Option<String>>,
    /// The level of the binary that made this cluster, if this node
    /// initialised it (0: it did not; see `node::upgrade`).
    born: AtomicU32,
}

impl Default for Versions {
    fn default() -> Self {
        Versions::new(LEVEL_0_1_0)
    }
}

impl Versions {
    pub fn new(active: FeatureLevel) -> Versions {
        Versions {
            inner: Arc::new(Inner {
                active: watch::channel(active).0,
                peers: Mutex::default(),
                too_new: watch::channel(None).0,
                born: AtomicU32::new(0),
            }),
        }
    }

    /// The cluster's active level, as this node's state machine knows it.
    pub fn active(&self) -> FeatureLevel {
        *self.inner.active.borrow()
    }

    /// Changes of the active level.
    pub fn watch_active(&self) -> watch::Receiver<FeatureLevel> {
        self.inner.active.subscribe()
    }

    /// The state machine applied (or installed) `level`.
    pub fn applied(&self, level: FeatureLevel) {
        let before = self.inner.active.send_replace(level);
        if before != level {
            tracing::info!(level, before, "the cluster's feature level");
        }
    }

    /// This node initialised the cluster with a binary of `level`.
    pub fn set_born(&self, level: FeatureLevel) {
        self.inner.born.store(level, Ordering::Relaxed);
    }

    /// The level of the binary that initialised the cluster, if this node
    /// did (0 otherwise). Up to it, the level is raised without an
    /// operator, and nothing else is proposed before.
    pub fn born(&self) -> FeatureLevel {
        self.inner.born.load(Ordering::Relaxed)
    }

    /// Whether Raft records are written sealed (CRC) now: only from
    /// level 2, so that a node rolled back to 0.1.0 reads its data dir.
    pub fn seal(&self) -> bool {
        self.active() >= crate::domain::feature::LEVEL_IDENTITY
    }

    /// Peer `id` reported `level` (0: none, a 0.1.0 node) and `version`.
    pub fn note(&self, id: u64, level: FeatureLevel, version: &str) {
        let level = level.max(LEVEL_0_1_0);
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.insert(id, (Instant::now(), level, version.to_string()));
    }

    /// Peer `id`'s last report, if any.
    pub fn report(&self, id: u64) -> Option<Report> {
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&id).map(|(at, level, version)| Report { level: *level, version: version.clone(), age: at.elapsed() })
    }

    /// Which of `members` (this node, `me`, excluded) do not speak
    /// `level`, or have not reported within `fresh`: id and why. Empty:
    /// every member speaks it.
    pub fn behind(
        &self,
        me: u64,
        members: impl IntoIterator<Item = u64>,
        level: FeatureLevel,
        fresh: Duration,
    ) -> BTreeMap<u64, String> {
        let mut behind = BTreeMap::new();
        if SUPPORTED < level {
            behind.insert(me, format!("node {me} (this node) speaks feature level {SUPPORTED} ({VERSION})"));
        }
        for id in members.into_iter().filter(|id| *id != me) {
            match self.report(id) {
                None => {
                    behind.insert(id, format!("node {id} has not reported its feature level (unreachable?)"));
                }
                Some(r) if r.age > fresh => {
                    behind.insert(
                        id,
                        format!("node {id} has not reported its feature level for {:?} (unreachable?)", r.age),
                    );
                }
                Some(r) if r.level < level => {
                    let version = if r.version.is_empty() { "0.1.0, which reports no level" } else { &r.version };
                    behind.insert(id, format!("node {id} speaks feature level {} ({version})", r.level));
                }
                Some(_) => {}
            }
        }
        behind
    }

    /// Which of `members` last reported a level below `level` (however
    /// long ago).
    pub fn reported_below(&self, members: impl IntoIterator<Item = u64>, level: FeatureLevel) -> Vec<u64> {
        members.into_iter().filter(|id| self.report(*id).is_some_and(|r| r.level < level)).collect()
    }

    /// A peer sent an entry this binary cannot decode: stop the node.
    pub fn raise_too_new(&self, why: String) {
        self.inner.too_new.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Why this node must stop (a peer speaks a level it does not), if so.
    pub fn too_new(&self) -> Option<String> {
        self.inner.too_new.borrow().clone()
    }

    /// Wait until [`Versions::raise_too_new`]; the cause.
    pub async fn wait_too_new(&self) -> String {
        let mut rx = self.inner.too_new.subscribe();
        loop {
            let why = rx.borrow_and_update().clone();
            if let Some(why) = why {
                return why;
            }
            // The sender lives in `self`: never closed while we wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_behind_or_silent_is_named() {
        let v = Versions::default();
        assert_eq!(v.active(), 1);
        assert!(!v.seal());
        v.note(2, 0, "");
        v.note(3, 2, "0.2.0 (abc)");
        let behind = v.behind(1, [1, 2, 3, 4], 2, REPORT_FRESH);
        assert_eq!(behind.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
        assert!(behind[&2].contains("node 2 speaks feature level 1 (0.1.0"), "{}", behind[&2]);
        assert!(behind[&4].contains("has not reported"), "{}", behind[&4]);
        v.note(2, 2, "0.2.0 (abc)");
        v.note(4, 2, "0.2.0 (abc)");
        assert!(v.behind(1, [1, 2, 3, 4], 2, REPORT_FRESH).is_empty());
        assert_eq!(v.behind(1, [2], 2, Duration::ZERO).keys().copied().collect::<Vec<_>>(), vec![2], "not fresh");
        assert_eq!(v.behind(1, [1], SUPPORTED + 1, REPORT_FRESH).keys().copied().collect::<Vec<_>>(), vec![1]);
        v.applied(2);
        assert!(v.seal());
    }
}
