//! # drover
//!
//! A Raft-replicated, clustered asynchronous task scheduler. Teams schedule
//! tasks against named callbacks; a small cluster of peer nodes (3 or 5)
//! replicates the task store through Raft (openraft) on RocksDB, and any
//! node accepts requests.
//!
//! ## Layout
//!
//! Layers only point down; `tests/it/layers.rs` checks it from the source.
//! From the top:
//!
//! - the `drover` binary (`src/main.rs`, `src/cli/`): server, dev cluster,
//!   client commands, shell worker, benchmarks and the chaos suite. Not part
//!   of the library.
//!   `src/testkit/` is the binary's, not the library's: the one
//!   local-cluster launcher and the checkers of the execution guarantees,
//!   for `drover dev`, `drover bench --local` and the chaos suite, compiled
//!   into the binary and, by path, into the integration tests. A library
//!   user gets none of it.
//! - [`worker`]: the worker SDK (leases, self-fencing, graceful shutdown),
//!   the shell worker and built-in handlers.
//! - [`client`]: a typed client that fails over between nodes and retries
//!   only what is safe to retry.
//! - [`node`]: the composition root. It opens storage, starts Raft, the
//!   timekeeper and the dispatcher, builds the gRPC services from narrow
//!   handles, and runs the node's lifecycle (health, graceful shutdown,
//!   restore from a backup, a data dir rebuilt by `admin rejoin`). Nothing
//!   in the library imports it.
//! - [`api`]: the gRPC edge (`proto/drover.proto`: services Scheduler,
//!   Worker and Cluster): protobuf to domain types, validation, forwarding
//!   to the leader, and the one `ApiError -> Status` conversion.
//! - [`scheduler`]: the leader-side dispatcher: worker sessions, leases
//!   held in memory, assignment (skipping gated collections, within rate
//!   limits), completion and expiry proposals; and the retention collector
//!   ([`scheduler::collector`]). It speaks domain types
//!   ([`scheduler::protocol`]).
//! - [`consensus`]: the handle over Raft: propose, linearizable reads,
//!   routing to the leader, leadership and quorum state, membership, and
//!   replicated time ([`consensus::clock`], [`consensus::timekeeper`]).
//!   Its errors ([`consensus::ConsensusError`]) say whether a write was
//!   not applied, refused, or has an unknown outcome.
//! - [`raft`]: every openraft type: the type config, the RocksDB log with
//!   group commit ([`raft::log_store`]), the state machine adapter
//!   ([`raft::state_machine`]), snapshots ([`raft::snapshot`]),
//!   node-to-node RPC ([`raft::network`], [`raft::service`]) and the
//!   cluster ID every node-to-node message is checked against
//!   ([`raft::identity`]).
//! - [`store`]: the task store on RocksDB: keys, task rows, the in-memory
//!   queue index (per callback, collection and priority; gates) and the
//!   deterministic apply logic, gates and retention's deletes included;
//!   drover's own reading of the write-ahead log before RocksDB replays it
//!   ([`store::wal`]) and the damage alarm ([`store::Damage`]).
//! - [`domain`]: tasks, callbacks, gates, replicated commands and their
//!   replies; the format-1 layouts earlier builds wrote.
//! - [`tls`]: TLS for every connection (certificates that reload, peer
//!   identity from `node-ID.drover` certificates, a throwaway CA).
//! - [`blocking`] (blocking work off the async runtime, or in place on
//!   the simulation's thread), [`config`] (typed node configuration, limits, and every timing with
//!   its checked relationships), [`net`] (shared gRPC channels, the one
//!   backoff, failure classification), [`encoding`] (the versioned record
//!   encoding of everything on disk), [`telemetry`] (W3C trace contexts
//!   and OpenTelemetry spans, exported over OTLP) and [`pb`] (generated
//!   protobuf).
//!
//! ## The write path
//!
//! client -> any node's [`api::scheduler`] -> validate ->
//! [`api::forward`] (forward if a follower) -> [`consensus::Consensus::propose`]
//! stamps a [`domain::Command`] with replicated time -> `Raft::client_write`
//! -> [`raft::log_store`] appends and the group-commit flusher fsyncs ->
//! replicated to a majority -> [`raft::state_machine`] applies it in one
//! `WriteBatch` ([`store`]) -> reply.

pub mod api;
pub mod blocking;
pub mod client;
pub mod config;
pub mod consensus;
pub mod domain;
pub mod encoding;
pub mod metrics;
pub mod net;
pub mod node;
pub mod raft;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;

/// Generated protobuf types.
pub mod pb {
    tonic::include_proto!("drover.v1");

    /// Every service's descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("drover_descriptor");

    /// Node-to-node Raft messages.
    pub mod raft {
        tonic::include_proto!("drover.raft.v1");
    }
}
