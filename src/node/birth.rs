//! A cluster's birth: bootstrap, and naming.
//!
//! - [`check_peers`]: `--bootstrap --peers` on a node that already holds a
//!   membership must name that membership's voters, or the node refuses to
//!   start (both lists in the error). The same `--peers --bootstrap` on
//!   every node is the supported way to start a new cluster.
//! - [`bootstrap`]: initialise from `--peers`, unless the node belongs to a
//!   cluster, or a peer's vote or entries reached it first; then it goes on
//!   as a member (it never exits for it).
//! - [`name_cluster`]: a leader that finds its cluster without an ID (a new
//!   cluster, or one made before cluster IDs) proposes a random one; the
//!   first applied is the cluster's for good.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::NodeError;
use crate::config::NodeConfig;
use crate::consensus::{Consensus, ConsensusError};
use crate::domain::{ClusterId, Command, Operation};

/// The members `--peers` names (with this node at its advertised address if
/// it is not listed).
fn members(config: &NodeConfig) -> BTreeMap<u64, String> {
    let mut members: BTreeMap<u64, String> = config.peers.iter().cloned().collect();
    members.entry(config.id).or_insert_with(|| config.advertise_addr());
    members
}

fn list(m: &BTreeMap<u64, String>) -> String {
    m.iter().map(|(id, addr)| format!("{id}={addr}")).collect::<Vec<_>>().join(",")
}

/// Whether `--peers` and a held membership's voters disagree, and how
/// (`None`: they agree, or there is nothing to compare).
pub fn disagreement(peers: &BTreeMap<u64, String>, held: &BTreeMap<u64, String>) -> Option<String> {
    if held.is_empty() || peers == held {
        return None;
    }
    Some(format!(
        "--bootstrap with --peers {} disagrees with the membership this node already holds: {}. Its data dir \
         belongs to that cluster: start it without --bootstrap (a restart needs only --id, --listen and \
         --data-dir), or give it the --peers above; for a new cluster, use an empty data dir",
        list(peers),
        list(held)
    ))
}

/// Refuse to start with `--bootstrap --peers` that disagree with the
/// membership this node already holds.
pub async fn check_peers(config: &NodeConfig, consensus: &Consensus) -> Result<(), NodeError> {
    if !config.bootstrap || config.peers.is_empty() {
        return Ok(());
    }
    let held = consensus.held_voters().await?;
    match disagreement(&members(config), &held) {
        Some(why) => Err(NodeError::Config(why)),
        None => Ok(()),
    }
}

/// Initialise a new cluster from `--peers` (a no-op for a node that
/// already belongs to one, or that a forming cluster reached first).
pub async fn bootstrap(config: &NodeConfig, consensus: &Consensus) -> Result<(), NodeError> {
    let members = members(config);
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
    if !consensus.bootstrap(members).await? {
        tracing::info!("--bootstrap ignored: this node already belongs to a cluster, or one is forming");
        return Ok(());
    }
    // A new cluster, made by this binary: it may start at this binary's
    // feature level (see `super::upgrade`).
    super::upgrade::mark_born(&config.data_dir)
        .map_err(|e| NodeError::Config(format!("{}: {e}", config.data_dir.display())))?;
    consensus.identity().versions().set_born(crate::domain::feature::SUPPORTED);
    Ok(())
}

/// Until `stop`: whenever this node leads (with its state machine caught
/// up) a cluster without an ID, propose one; only once the cluster's
/// feature level has cluster IDs (a 0.1.0 member could not decode it).
pub async fn name_cluster(consensus: Consensus, stop: CancellationToken) {
    let mut leadership = consensus.watch();
    let mut named = consensus.identity().watch();
    let mut level = consensus.identity().versions().watch_active();
    let mut backoff = crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let level_has_ids = *level.borrow_and_update() >= crate::domain::feature::LEVEL_IDENTITY;
        if named.borrow_and_update().is_none() && leadership.current().ready && level_has_ids {
            let id = ClusterId::random();
            // Stamped 0: the naming does not move replicated time (a new
            // cluster's clock starts from its voters' clocks).
            let cmd = Command { stamped_at_ms: 0, operation: Operation::SetClusterId { cluster_id: id } };
            match consensus.propose(cmd).await {
                Ok(_) => {
                    if consensus.identity().cluster_id() == Some(id) {
                        tracing::info!(cluster_id = %id, "named this cluster");
                    }
                    continue;
                }
                Err(ConsensusError::NotLeader { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "proposing the cluster ID; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = backoff.wait() => {}
                    }
                    continue;
                }
            }
        }
        if named.borrow().is_some() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            alive = leadership.changed() => if !alive { return },
            changed = named.changed() => if changed.is_err() { return },
            changed = level.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(u64, &str)]) -> BTreeMap<u64, String> {
        pairs.iter().map(|(id, a)| (*id, a.to_string())).collect()
    }

    #[test]
    fn peers_that_disagree_with_the_held_membership_are_named_both() {
        let peers = m(&[(1, "a:1"), (2, "b:2"), (3, "c:3")]);
        assert_eq!(disagreement(&peers, &BTreeMap::new()), None, "a new node holds nothing to compare");
        assert_eq!(disagreement(&peers, &peers.clone()), None);
        let moved = m(&[(1, "a:1"), (2, "b:2"), (3, "x:3")]);
        let e = disagreement(&peers, &moved).expect("another address");
        assert!(e.contains("--peers 1=a:1,2=b:2,3=c:3") && e.contains("1=a:1,2=b:2,3=x:3"), "{e}");
        assert!(disagreement(&peers, &m(&[(1, "a:1"), (2, "b:2")])).is_some(), "another voter set");
    }
}
