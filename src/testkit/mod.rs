//! Test and benchmark tooling, shared by `drover dev`, `drover bench`, the
//! chaos suite and the integration tests. Not part of the API applications
//! use: it is behind the `testkit` feature (on by default, so that the
//! binary and the tests get it; a library user may turn it off).
//!
//! - [`launcher`]: the one local-cluster launcher (child processes on
//!   loopback).
//! - [`invariants`]: checkers of the execution guarantees over recorded runs.

pub mod invariants;
pub mod launcher;

pub use launcher::{LaunchError, LocalCluster, LocalNode, Spec};
