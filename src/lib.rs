//! # drover
//!
//! A Raft-replicated, clustered asynchronous task scheduler. Teams schedule
//! tasks against named callbacks; a small cluster of peer nodes (3 or 5)
//! replicates the task store through Raft (openraft) on RocksDB, and any
//! node accepts requests.
//!
//! ## Layout
//!
//! - [`config`]: typed node configuration and its limits.
//! - [`node`]: a running node: storage, Raft, gRPC server, lifecycle; and
//!   [`node::NodeContext`], what every service shares.
//! - [`api`]: the public gRPC services (`proto/drover.proto`), validation,
//!   forwarding to the leader, and the one `ApiError -> Status` conversion.
//! - [`raft`]: everything that names an openraft type: the type config, the
//!   RocksDB log with group commit ([`raft::log_store`]), the state machine
//!   adapter ([`raft::state_machine`]), snapshots ([`raft::snapshot`]) and
//!   node-to-node RPC ([`raft::network`], [`raft::service`]).
//! - [`store`]: the task store on RocksDB: keys, task rows, replicated
//!   commands and the deterministic apply logic.
//! - [`scheduler`]: the leader-side dispatcher: worker sessions, leases
//!   held in memory, assignment, completion and expiry proposals.
//! - [`clock`]: replicated time: how the leader stamps commands (apply never
//!   reads a clock), steered toward the median of the voters' clocks.
//! - [`timekeeper`]: samples the voters' clocks; a node whose clock is wrong
//!   warns and does not lead.
//! - [`net`]: long-lived gRPC channels shared by replication and forwarding.
//! - [`encoding`]: the versioned record encoding of everything on disk.
//! - [`worker`]: the worker SDK (leases, self-fencing, graceful shutdown),
//!   the shell worker and built-in handlers.
//! - [`invariants`]: checkers of the execution guarantees over recorded
//!   runs (tests and the chaos suite).
//! - [`restore`]: seeding a new cluster from a backup.
//! - [`client`]: a client that fails over between nodes.
//! - [`cli`]: the `drover` command line (server, dev cluster, client
//!   commands, benchmarks).
//!
//! ## The write path
//!
//! client -> any node's [`api::scheduler`] -> validate ->
//! [`api::on_leader`] (forward if a follower) -> leader stamps a
//! [`store::Command`] -> `Raft::client_write` -> [`raft::log_store`] appends
//! and the group-commit flusher fsyncs -> replicated to a majority ->
//! [`raft::state_machine`] applies it in one `WriteBatch` -> reply.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod consensus;
pub mod domain;
pub mod encoding;
pub mod invariants;
pub mod net;
pub mod node;
pub mod raft;
pub mod scheduler;
pub mod store;
pub mod worker;

/// Generated protobuf types.
pub mod pb {
    tonic::include_proto!("drover.v1");

    /// Node-to-node Raft messages.
    pub mod raft {
        tonic::include_proto!("drover.raft.v1");
    }
}
