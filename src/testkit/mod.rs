//! Test and benchmark tooling, shared by `drover dev`, `drover bench`, the
//! chaos suite and the integration tests. Not part of the library: the
//! binary compiles it as its own module (`src/main.rs`), and the integration
//! tests by path (`tests/it/main.rs`), so an application that depends on
//! drover gets none of it. It uses only the library's public API.
//!
//! Each of the two crates uses a part of it (the tests kill and pause
//! nodes, the binary does not), hence `dead_code` is allowed here.
//!
//! - [`launcher`]: the one local-cluster launcher (child processes on
//!   loopback).
//! - [`invariants`]: checkers of the execution guarantees over recorded runs.

#![allow(dead_code)]

pub mod invariants;
pub mod launcher;

pub use launcher::{LocalCluster, Spec};
