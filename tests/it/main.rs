//! Integration tests: real multi-node clusters of `drover server`
//! processes on loopback, each with its own temp data dir.
//!
//! - [`harness`]: start, kill (SIGKILL), stop (SIGTERM) and restart nodes;
//!   wait on conditions, never on bare sleeps.
//! - [`replication`]: durability and availability guarantees.
//! - [`api`]: status codes for bad requests, idempotency.
//! - [`cli`]: the command line's contract.
//! - [`gating`]: collections, gates, rate limits and retention.
//! - [`periodic`]: periodic schedules.

mod api;
mod auth;
mod auth_console;
mod cli;
mod clock;
mod conformance;
mod console;
mod dependencies;
mod disk;
mod execution;
mod gating;
mod harness;
mod hostile;
mod invariants;
mod layers;
mod membership;
mod observe;
mod periodic;
mod proxy;
mod replication;
mod tls;
mod trust;
