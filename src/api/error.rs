//! The API layer's error, converted to a gRPC status in exactly one place.

use tonic::{Code, Status};

use crate::consensus::{ConsensusError, Peer};
pub use crate::net::{LEADER_HINT, RETRY_AFTER_MS};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The target is not in a state the request applies to.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No leader is known, or the leader is unreachable: retry later, at
    /// this or another node. The write was not applied.
    #[error("{message}")]
    Unavailable { message: String, leader: Option<Peer>, retry_after_ms: u64 },
    /// The outcome is unknown: the write may still commit. Retry with the
    /// same idempotency key.
    #[error("{0}")]
    Timeout(String),
    /// The outcome is unknown because a connection broke with the request
    /// in flight (not a timeout). Retry with the same idempotency key.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Over a size limit; the message says which.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Internal(String),
    /// No credentials, or credentials no grant knows.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's grant does not cover the call; the message names the
    /// role or callback it would need.
    #[error("{0}")]
    PermissionDenied(String),
}

impl ApiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable { message: message.into(), leader: None, retry_after_ms: 500 }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<ConsensusError> for ApiError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::NotLeader { message, leader } => {
                ApiError::Unavailable { message, leader, retry_after_ms: 200 }
            }
            ConsensusError::Unavailable { message, retry_after_ms } => {
                ApiError::Unavailable { message, leader: None, retry_after_ms }
            }
            ConsensusError::OutcomeUnknown(m) => ApiError::Timeout(m),
            ConsensusError::Refused(m) => ApiError::FailedPrecondition(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(format!("storage: {e}"))
    }
}

impl From<crate::domain::Rejection> for ApiError {
    fn from(r: crate::domain::Rejection) -> Self {
        use crate::domain::Rejection;
        match r {
            Rejection::NotFound(m) => ApiError::NotFound(m),
            Rejection::InvalidArgument(m) => ApiError::InvalidArgument(m),
            Rejection::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Timeout(m) => Status::deadline_exceeded(m),
            ApiError::OutcomeUnknown(m) => Status::aborted(m),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::Internal(m) => Status::internal(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::Unavailable { message, leader, retry_after_ms } => {
                let mut status = Status::new(Code::Unavailable, message);
                let md = status.metadata_mut();
                if let Ok(v) = retry_after_ms.to_string().parse() {
                    md.insert(RETRY_AFTER_MS, v);
                }
                if let Some(p) = leader {
                    if let Ok(v) = format!("{}={}", p.id, p.addr).parse() {
                        md.insert(LEADER_HINT, v);
                    }
                }
                status
            }
        }
    }
}
