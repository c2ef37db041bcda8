//! Domain types: what drover is about, with no storage, consensus or
//! protocol in them. Every layer above speaks these.
//!
//! - [`task`]: the task row and its states.
//! - [`callback`]: callback settings and retry backoff.
//! - [`command`]: the replicated commands and the state machine's replies.

pub mod callback;
pub mod command;
pub mod task;

#[cfg(test)]
mod encoding_tests;

pub use callback::CallbackConfig;
pub use command::*;
pub use task::{Task, TaskState, Transition};
