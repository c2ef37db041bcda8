//! The API layer's error, converted to a gRPC status in exactly one place.

use tonic::{Code, Status};

/// Metadata key carrying the leader's id and address on `UNAVAILABLE`.
pub const LEADER_HINT: &str = "x-drover-leader";
/// Metadata key carrying a suggested retry delay in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

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
    Unavailable { message: String, leader: Option<(u64, String)>, retry_after_ms: u64 },
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
}

impl ApiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable { message: message.into(), leader: None, retry_after_ms: 500 }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
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
            ApiError::Unavailable { message, leader, retry_after_ms } => {
                let mut status = Status::new(Code::Unavailable, message);
                let md = status.metadata_mut();
                if let Ok(v) = retry_after_ms.to_string().parse() {
                    md.insert(RETRY_AFTER_MS, v);
                }
                if let Some((id, addr)) = leader {
                    if let Ok(v) = format!("{id}={addr}").parse() {
                        md.insert(LEADER_HINT, v);
                    }
                }
                status
            }
        }
    }
}

/// Read the leader hint back from a status (client side).
pub fn leader_hint(status: &Status) -> Option<(u64, String)> {
    leader_hint_in(status.metadata())
}

/// Read the leader hint from response or status metadata.
pub fn leader_hint_in(md: &tonic::metadata::MetadataMap) -> Option<(u64, String)> {
    let v = md.get(LEADER_HINT)?.to_str().ok()?;
    let (id, addr) = v.split_once('=')?;
    Some((id.parse().ok()?, addr.to_string()))
}
