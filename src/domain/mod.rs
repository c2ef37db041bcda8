//! Domain types: what drover is about, with no storage, consensus or
//! protocol in them. Every layer above speaks these.
//!
//! - [`task`]: the task row and its states.
//! - [`auth`]: roles, grants and the principals they name.
//! - [`callback`]: callback settings and retry backoff.
//! - [`command`]: the replicated commands and the state machine's replies.
//! - [`dependency`]: task dependencies (parents, policies, counts).
//! - [`gate`]: gates (pause, drop) on callbacks and collections.
//! - [`schedule`]: periodic schedules and their slots.
//! - [`legacy`]: the format-1 layouts of records that format 2 changed,
//!   read only.

pub mod auth;
pub mod callback;
pub mod command;
pub mod dependency;
pub mod gate;
pub mod legacy;
pub mod schedule;
pub mod task;

#[cfg(test)]
mod encoding_tests;

pub use callback::{CallbackConfig, RateLimit, Retention};
pub use command::*;
pub use gate::{Gate, GateMode, GateTarget};
pub use task::{Task, TaskState, Transition};
