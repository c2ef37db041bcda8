//! One connected worker, as the dispatcher sees it.

use std::collections::{HashMap, HashSet};

use super::SessionTx;
use crate::pb;

pub struct Session {
    pub worker_id: String,
    /// Most tasks per callback this worker runs at once.
    pub credits: HashMap<String, u32>,
    /// Tasks this worker holds, by callback.
    pub running: HashMap<String, HashSet<u64>>,
    /// Assignments proposed for it and not yet committed, by callback.
    pub reserved: HashMap<String, u32>,
    pub tx: SessionTx,
    /// Draining: takes no new tasks.
    pub draining: bool,
}

impl Session {
    pub fn new(hello: &pb::Hello, tx: SessionTx) -> Self {
        Session {
            worker_id: hello.worker_id.clone(),
            credits: hello.callbacks.iter().map(|c| (c.callback.clone(), c.concurrency)).collect(),
            running: HashMap::new(),
            reserved: HashMap::new(),
            tx,
            draining: false,
        }
    }

    /// How many more tasks of `callback` it can take now.
    pub fn free(&self, callback: &str) -> u32 {
        if self.draining {
            return 0;
        }
        let credits = self.credits.get(callback).copied().unwrap_or(0);
        let busy = self.running.get(callback).map_or(0, |s| s.len() as u32)
            + self.reserved.get(callback).copied().unwrap_or(0);
        credits.saturating_sub(busy)
    }

    pub fn holds(&mut self, callback: &str, id: u64) {
        self.running.entry(callback.to_string()).or_default().insert(id);
    }

    pub fn release(&mut self, callback: &str, id: u64) {
        if let Some(s) = self.running.get_mut(callback) {
            s.remove(&id);
        }
    }

    /// Queue a message; false if the stream is gone or hopelessly behind.
    pub fn send(&self, msg: pb::server_message::Msg) -> bool {
        self.tx.try_send(Ok(pb::ServerMessage { msg: Some(msg) })).is_ok()
    }
}
