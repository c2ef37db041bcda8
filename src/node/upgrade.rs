//! A new cluster starts at its binary's feature level.
//!
//! A cluster of data written by 0.1.0 stays at level 1 until an operator
//! runs `drover cluster upgrade --finalize` (README, "Upgrading"): until
//! then any node may go back to 0.1.0. A cluster this binary made itself
//! (the node that initialised it with `--bootstrap` keeps a
//! [`BORN_FILE`] in its data dir, naming its binary's level) has nothing
//! to go back to: while that node leads, it raises the level to that one
//! as soon as every member reports that it speaks it (the same check as
//! the finalize), and proposes nothing else before (`Consensus::propose`
//! waits for the naming that follows the raise).

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::{Consensus, ConsensusError};
use crate::domain::feature::SUPPORTED;
use crate::domain::{Command, Operation};

/// In a data dir: this node initialised a new cluster, with a binary of
/// this level.
pub const BORN_FILE: &str = "born-at-level";

/// How often the leader looks again.
const EVERY: Duration = Duration::from_millis(100);

/// Note that this node initialised a new cluster (synced).
pub fn mark_born(data_dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(data_dir.join(BORN_FILE))?;
    f.write_all(SUPPORTED.to_string().as_bytes())?;
    f.sync_all()
}

/// The level of the binary that initialised the cluster, if this node did.
pub fn born_level(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join(BORN_FILE)).ok()?.trim().parse().ok()
}

/// Until `stop`, or the cluster reaches this binary's level: while this
/// node leads a cluster it initialised, raise the level to that of the
/// binary that initialised it, once every member speaks it.
pub async fn raise_new_cluster(consensus: Consensus, stop: CancellationToken) {
    let versions = consensus.identity().versions().clone();
    let mut refused_logged = false;
    loop {
        if versions.active() >= SUPPORTED {
            return;
        }
        let born = versions.born().min(SUPPORTED);
        let leads = consensus.watch().current().ready;
        if leads && born > versions.active() {
            let cmd = Command { stamped_at_ms: 0, operation: Operation::SetFeatureLevel { level: born } };
            match consensus.check_level(&cmd.operation) {
                Ok(()) => match consensus.propose(cmd).await {
                    Ok(_) => tracing::info!(level = born, "a new cluster: feature level raised"),
                    Err(ConsensusError::NotLeader { .. }) => {}
                    Err(e) => tracing::debug!(error = %e, "raising the feature level; retrying"),
                },
                Err(e) if !refused_logged => {
                    refused_logged = true;
                    tracing::info!("a new cluster waits for its members before it turns feature level {born} on: {e}");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
