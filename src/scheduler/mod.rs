//! The leader-side scheduler: worker sessions, dispatch, leases and
//! timers. One actor per node ([`dispatcher::Dispatcher`]) owns all of it;
//! it is active only while its node leads.
//!
//! ```text
//!  worker --Connect--> api::worker --Msg--> Dispatcher (actor, leader only)
//!                                            |  picks ready tasks from the live index
//!                                            |  proposes Assign (one entry, many tasks)
//!                                            |  after commit: sends Assignment(token = entry index)
//!   heartbeats  -------------------------->  |  extends leases in memory (no Raft write)
//!   completions ------------------------->   |  proposes Complete in batches (CAS on token)
//!                                            |  lapsed leases: proposes Expire in batches
//! ```
//!
//! Gates are checked twice: the dispatcher does not pick what a gate holds
//! (the live index skips gated collections), and apply refuses an
//! assignment whose task a gate held when it committed. Rate limits are the
//! dispatcher's alone ([`rate`]). The [`collector`] proposes retention's
//! deletes and removes expired gates; the [`ticker`] fires periodic
//! schedules.
//!
//! Leases are held by the leader in memory, on its monotonic clock. A new
//! leader gives every running task a full lease from the moment it takes
//! over, so a failover can only lengthen a lease, never cut it short. See
//! DESIGN.md, "Leases and fencing".

mod assign;
pub mod collector;
pub mod dispatcher;
mod leases;
pub mod protocol;
mod rate;
mod revocation;
mod session;
mod spans;
pub mod ticker;

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::consensus::clock::ProposerClock;
use crate::consensus::{Consensus, Peer};
use crate::store::{SharedIndex, TaskStore};
pub use dispatcher::Dispatcher;
use protocol::{FromWorker, Hello, ToWorker};

/// Session id, unique per node run.
pub type SessionId = u64;

/// The outbound half of a worker's stream.
pub type SessionTx = mpsc::Sender<ToWorker>;

/// What the dispatcher needs, and nothing more.
#[derive(Clone)]
pub struct Deps {
    pub consensus: Consensus,
    /// Task rows and payloads (reads).
    pub store: TaskStore,
    /// Callbacks, queues and running tasks, kept by apply.
    pub index: SharedIndex,
    pub clock: ProposerClock,
    /// A waiting task gains one priority level per this much waiting.
    pub priority_aging: Duration,
    /// Wakes the dispatcher when something is applied.
    pub applied: tokio::sync::watch::Receiver<crate::store::Applied>,
    /// The node's tracker: the dispatcher's proposals run on it, so a
    /// shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
}

/// Leader-side slack added to every lease before it is expired: covers the
/// one-way delay of the first grant and scheduling jitter. The worker
/// fences itself at the lease alone, without this slack.
pub fn lease_grace(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_millis(500))
}

/// Messages to the dispatcher.
pub enum Msg {
    /// A worker's first message. The reply is its session id, or where the
    /// leader is when this node does not lead.
    Connect {
        hello: Hello,
        /// The grant the stream was opened with (by id), if any: the
        /// stream ends when it is revoked or expires while auth is on.
        grant: Option<String>,
        tx: SessionTx,
        reply: oneshot::Sender<Result<SessionId, Option<Peer>>>,
    },
    /// Anything later on a worker's stream, with when it arrived.
    FromWorker {
        session: SessionId,
        msg: FromWorker,
        received: Instant,
    },
    Disconnect {
        session: SessionId,
    },
    /// Results of proposals the dispatcher spawned.
    Proposed(dispatcher::Proposal),
    /// The connected workers (`None`: this node does not lead).
    ListWorkers {
        reply: oneshot::Sender<Option<Vec<protocol::WorkerView>>>,
    },
}

/// Handle to a node's dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Msg>,
}

impl Scheduler {
    pub fn channel() -> (Scheduler, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(4096);
        (Scheduler { tx }, rx)
    }

    /// Send a message; false if the dispatcher has stopped.
    pub async fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// The workers connected to this node, if it leads.
    pub async fn workers(&self) -> Option<Vec<protocol::WorkerView>> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Msg::ListWorkers { reply }).await {
            return None;
        }
        rx.await.ok().flatten()
    }

    pub(crate) fn sender(&self) -> mpsc::Sender<Msg> {
        self.tx.clone()
    }
}
