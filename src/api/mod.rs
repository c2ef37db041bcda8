//! The gRPC edge (`proto/drover.proto`), served by every node: protobuf to
//! domain types and back, validation, forwarding to the leader, and status
//! codes. Nothing below this layer sees a protobuf type.
//!
//! - [`scheduler`]: `Schedule`, `ScheduleBatch`, `GetTask`, lists, cancel,
//!   callbacks and the dead-letter queue.
//! - [`cluster`] and [`membership`]: status, membership, backup, digest,
//!   clocks; [`replace`]: rebuilding a damaged member under a new id;
//!   [`upgrade`]: members' versions and raising the feature level.
//! - [`gates`]: gate requests and retention status.
//! - [`schedules`]: periodic schedule definitions and their handlers.
//! - [`worker`]: the worker stream, bridged to the dispatcher.
//! - [`access`]: who is calling and what they may do (roles, grants,
//!   callback scopes); [`auth`]: the service that edits grants.
//! - [`convert`]: protobuf <-> domain conversions.
//! - [`validate`]: request validation at the edge.
//! - [`forward`]: run on the leader, or forward there.
//! - [`error`]: [`ApiError`] and its single conversion into `tonic::Status`.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod console;
pub mod convert;
pub mod error;
pub mod forward;
pub mod gates;
pub mod http;
pub mod membership;
pub mod replace;
pub mod scheduler;
pub mod schedules;
mod scope;
pub mod spans;
pub mod upgrade;
pub mod validate;
pub mod worker;

pub use error::ApiError;
