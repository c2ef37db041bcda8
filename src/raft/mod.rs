//! Consensus: everything that names an openraft type lives under this module,
//! so that an openraft upgrade touches only here.
//!
//! - [`TypeConfig`]: drover's Raft type configuration (u64 node ids, [`Command`]
//!   entries, [`CommandResponse`] replies).
//! - [`log_store`]: the Raft log on RocksDB, with group commit.
//! - [`state_machine`]: the openraft face of [`crate::store::TaskStore`].
//! - [`snapshot`]: snapshot files (build, checksum, install).
//! - [`network`] / [`service`]: node-to-node RPC over tonic.
//! - [`identity`]: the cluster ID and the check every message between
//!   nodes passes (another cluster's, or one meant for another node, is
//!   refused before Raft sees it).
//! - [`versions`]: feature levels at run time: the cluster's active
//!   level, what each peer reports, the alarm for an entry too new.
//! - [`codec`]: drover's own on-disk encoding of log ids, entries and
//!   memberships (never serde of openraft types on disk).
//! - `fuzz` (tests only): property fuzzers of every decoder that reads
//!   outside bytes, records and messages alike.

pub mod check;
pub mod codec;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod fuzz;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod versions;

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
pub type RaftServerMetrics = openraft::metrics::RaftServerMetrics<TypeConfig>;
pub type RaftDataMetrics = openraft::metrics::RaftDataMetrics<TypeConfig>;
pub type ServerState = openraft::ServerState;
pub type RaftConfig = openraft::Config;
pub type ClientWriteError = openraft::error::ClientWriteError<TypeConfig>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<TypeConfig, E>;

pub use openraft::ReadPolicy;

/// Why Raft could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("openraft: {0}")]
    Raft(String),
    /// The data dir failed its checks (checksums, formats, snapshot CRC).
    #[error("{0}")]
    Corrupt(#[from] check::Corrupt),
}

/// What a started Raft node hands the layers above.
pub struct Started {
    pub raft: Raft,
    /// The scheduler's in-memory view, kept by apply.
    pub index: crate::store::SharedIndex,
    /// What has been applied (index and replicated time).
    pub applied: tokio::sync::watch::Receiver<crate::store::Applied>,
    /// Snapshot files, which the Raft service receives into.
    pub snapshots: snapshot::SnapshotDir,
    /// How long the log's WAL sync in progress has been running.
    pub sync_watch: log_store::SyncWatch,
    /// This node's cluster ID and the check of every peer's messages.
    pub identity: identity::Identity,
}

/// Where a node's Raft keeps its state: the database, the data dir (for
/// snapshot files) and how log appends are synced.
pub struct Storage<'a> {
    pub db: Arc<rocksdb::DB>,
    pub data_dir: &'a std::path::Path,
    pub wal_sync: log_store::WalSync,
}

/// Open the state machine and the log in `storage` and start this node's
/// Raft, talking to peers over `pool`; they reach this node at
/// `advertise`. A read that finds damaged data raises `damage`.
pub async fn start(
    id: NodeId,
    advertise: String,
    tuning: &crate::config::RaftTuning,
    storage: Storage<'_>,
    pool: crate::net::ChannelPool,
    damage: crate::store::Damage,
) -> Result<Started, StartError> {
    let Storage { db, data_dir, wal_sync } = storage;
    // Refuse to serve from damaged files: read everything once, checksums on.
    let (check_db, dir) = (db.clone(), data_dir.to_path_buf());
    let report = crate::blocking::run(move || check::verify(&check_db, &dir))
        .await
        .map_err(|e| StartError::Raft(format!("data dir check: {e}")))??;
    tracing::info!(records = ?report.records, "data dir verified");
    let snapshot_dir = data_dir.join("snapshots");
    let identity = identity::Identity::open(id, advertise, db.clone())?;
    let (state_machine, applied) =
        state_machine::StateMachine::open(db.clone(), snapshot_dir.clone(), damage.clone(), identity.clone())?;
    let index = state_machine.index();
    let log_store = log_store::LogStore::with_sync(db, damage, identity.versions().clone(), wal_sync)?;
    let sync_watch = log_store.sync_watch();
    let network = network::Network { node_id: id, pool, identity: identity.clone() };
    let config = raft_config(tuning).map_err(StartError::Config)?;
    let raft =
        Raft::new(id, config, network, log_store, state_machine).await.map_err(|e| StartError::Raft(e.to_string()))?;
    let snapshots = snapshot::SnapshotDir::open(snapshot_dir)?;
    Ok(Started { raft, index, applied, snapshots, sync_watch, identity })
}

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
