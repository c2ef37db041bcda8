//! Domain types: what drover is about, with no storage, consensus or
//! protocol in them. Every layer above speaks these.
//!
//! - [`task`]: the task row and its states.
//! - [`auth`]: roles, grants and the principals they name.
//! - [`callback`]: callback settings and retry backoff.
//! - [`cluster`]: the cluster's ID.
//! - [`command`]: the replicated commands and the state machine's replies.
//! - [`dependency`]: task dependencies (parents, policies, counts).
//! - [`feature`]: feature levels (what each adds, which entries need which).
//! - [`gate`]: gates (pause, drop) on callbacks and collections.
//! - [`schedule`]: periodic schedules and their slots.
//! - [`trace`]: the W3C trace context a task carries.
//! - [`legacy`]: the format-1 layouts of records that format 2 changed,
//!   read only.

pub mod auth;
pub mod callback;
pub mod cluster;
pub mod command;
pub mod dependency;
pub mod feature;
pub mod gate;
pub mod legacy;
pub mod schedule;
pub mod task;
pub mod trace;

#[cfg(test)]
mod encoding_tests;

pub use callback::{CallbackConfig, RateLimit, Retention};
pub use cluster::ClusterId;
pub use command::*;
pub use gate::{Gate, GateMode, GateTarget};
pub use task::{Task, TaskState, Transition};
