//! Consensus: everything that names an openraft type lives under this module,
//! so that an openraft upgrade touches only here.
//!
//! - [`TypeConfig`]: drover's Raft type configuration (u64 node ids, [`Command`]
//!   entries, [`CommandResponse`] replies).
//! - [`log_store`]: the Raft log on RocksDB, with group commit.
//! - [`state_machine`]: the openraft face of [`crate::store::TaskStore`].
//! - [`snapshot`]: snapshot files (build, checksum, install).
//! - [`network`] / [`service`]: node-to-node RPC over tonic.
//! - [`codec`]: drover's own on-disk encoding of log ids, entries and
//!   memberships (never serde of openraft types on disk).

pub mod codec;
#[cfg(test)]
mod conformance;
pub mod log_store;
pub mod network;
pub mod service;
pub mod snapshot;
pub mod state_machine;

use std::sync::Arc;

use crate::domain::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// Drover's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, snapshot::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type ServerState = openraft::ServerState;
pub type RaftConfig = openraft::Config;
pub type ClientWriteError = openraft::error::ClientWriteError<TypeConfig>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<TypeConfig, E>;

pub use openraft::ReadPolicy;

/// Build openraft's config from drover's node config.
pub fn raft_config(tuning: &crate::config::RaftTuning) -> Result<Arc<RaftConfig>, String> {
    let config = RaftConfig {
        cluster_name: "drover".to_string(),
        heartbeat_interval: tuning.heartbeat_ms,
        election_timeout_min: tuning.election_timeout_ms,
        election_timeout_max: tuning.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
        max_in_snapshot_log_to_keep: tuning.logs_to_keep,
        purge_batch_size: 1024,
        max_payload_entries: 512,
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    let config = config.validate().map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// The log index of a log id, 0 for none.
pub fn index_of(log_id: Option<&LogId>) -> u64 {
    log_id.map(|l| l.index).unwrap_or(0)
}

/// Role of a node in human words.
pub fn role_name(state: ServerState, is_voter: bool) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
        ServerState::Follower | ServerState::Learner if !is_voter => "learner",
        ServerState::Follower | ServerState::Learner => "follower",
    }
}
