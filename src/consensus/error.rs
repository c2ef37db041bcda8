//! The consensus layer's error: it says whether anything may have been
//! written, which is what a caller must decide on.

use super::Peer;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Nothing was written: this node does not lead. The leader, if known.
    #[error("{message}")]
    NotLeader { message: String, leader: Option<Peer> },
    /// Nothing was written (no leader, no quorum, shutting down, restoring):
    /// retry after the hint.
    #[error("{message}")]
    Unavailable { message: String, retry_after_ms: u64 },
    /// The write may or may not commit: retry only with the same
    /// idempotency key or request id.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Raft refused the request as it stands (a membership change while
    /// another is in progress, ...): retrying the same request will not help
    /// until the situation changes.
    #[error("{0}")]
    Refused(String),
}

impl ConsensusError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        ConsensusError::Unavailable { message: message.into(), retry_after_ms: 500 }
    }
}
