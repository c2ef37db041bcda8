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
mod corruption;
mod dependencies;
mod disk;
mod execution;
mod gating;
mod harness;
mod hostile;
mod identity;
mod invariants;
mod layers;
mod membership;
mod observe;
mod periodic;
mod proxy;
mod replication;
mod revocation;
// The binary's launcher and checkers, compiled in by path (not part of the
// library's API).
#[path = "../../src/testkit/mod.rs"]
mod testkit;
mod tls;
mod traces;
mod trust;
mod upgrade;
