//! One connected worker, as the dispatcher sees it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{Hello, ToWorker};
use super::SessionTx;

pub struct Session {
    pub worker_id: String,
    /// The grant (id) its stream was opened with; `None`: no grant (auth
    /// off and no credentials, or a peer).
    pub grant: Option<String>,
    /// Most tasks per callback this worker runs at once.
    pub credits: HashMap<String, u32>,
    /// Tasks this worker holds, by callback.
    pub running: HashMap<String, HashSet<u64>>,
    /// Assignments proposed for it and not yet committed, by callback.
    pub reserved: HashMap<String, u32>,
    pub tx: SessionTx,
    /// Draining: takes no new tasks.
    pub draining: bool,
    /// Last message from the worker. A worker silent for [`STALE_AFTER`]
    /// (paused, partitioned) gets no new tasks until it speaks again.
    pub last_seen: Instant,
}

/// Silence after which a session gets no new tasks (workers heartbeat at
/// least every second).
pub const STALE_AFTER: Duration = Duration::from_secs(3);

impl Session {
    pub fn new(hello: &Hello, grant: Option<String>, tx: SessionTx) -> Self {
        Session {
            worker_id: hello.worker_id.clone(),
            grant,
            credits: hello.credits.iter().cloned().collect(),
            running: HashMap::new(),
            reserved: HashMap::new(),
            tx,
            draining: false,
            last_seen: Instant::now(),
        }
    }

    /// How many more tasks of `callback` it can take now.
    pub fn free(&self, callback: &str) -> u32 {
        if self.draining || self.last_seen.elapsed() > STALE_AFTER {
            return 0;
        }
        let credits = self.credits.get(callback).copied().unwrap_or(0);
        let busy = self.running.get(callback).map_or(0, |s| s.len() as u32)
            + self.reserved.get(callback).copied().unwrap_or(0);
        credits.saturating_sub(busy)
    }

    /// Treat the worker as silent until its next message (one of its leases
    /// just lapsed: it is paused, cut off, or overloaded).
    pub fn suspect(&mut self) {
        self.last_seen = Instant::now().checked_sub(STALE_AFTER * 2).unwrap_or(self.last_seen);
    }

    pub fn holds(&mut self, callback: &str, id: u64) {
        self.running.entry(callback.to_string()).or_default().insert(id);
    }

    pub fn release(&mut self, callback: &str, id: u64) {
        if let Some(s) = self.running.get_mut(callback) {
            s.remove(&id);
        }
    }

    /// Queue a message; false if the stream is gone or its buffer is full
    /// (then the message was not queued at all).
    pub fn send(&self, msg: ToWorker) -> bool {
        self.tx.try_send(msg).is_ok()
    }
}
