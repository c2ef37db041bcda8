//! Feature levels at the edge: each member's version for `cluster status`,
//! and `FinalizeUpgrade` (`drover cluster upgrade --finalize`).

use std::time::{Duration, Instant};

use super::ApiError;
use crate::consensus::Consensus;
use crate::domain::feature::{LEVEL_0_1_0, SUPPORTED};
use crate::domain::{Command, Operation};
use crate::net::ChannelPool;
use crate::pb;
use crate::raft::versions::VERSION;

/// Member `id`'s version and feature level: from its own status, else its
/// last clock report; a member that answers without either is a 0.1.0
/// node. Empty and 0: unknown (unreachable, never heard from).
pub fn member_version(consensus: &Consensus, id: u64, status: Option<&pb::NodeStatusResponse>) -> (String, u32) {
    if id == consensus.id() {
        return (VERSION.to_string(), SUPPORTED);
    }
    if let Some(s) = status.filter(|s| !s.version.is_empty()) {
        return (s.version.clone(), s.feature_level);
    }
    match consensus.identity().versions().report(id) {
        Some(r) if !r.version.is_empty() => (r.version, r.level),
        Some(r) => ("0.1.0".to_string(), r.level),
        None if status.is_some() => ("0.1.0".to_string(), LEVEL_0_1_0),
        None => (String::new(), 0),
    }
}

/// Raise the cluster's feature level to `level` (0: this binary's
/// highest), if every member reports that it speaks it. A level at or
/// below the active one changes nothing.
pub async fn finalize(
    consensus: &Consensus,
    pool: &ChannelPool,
    level: u32,
) -> Result<pb::FinalizeUpgradeResponse, ApiError> {
    let versions = consensus.identity().versions();
    let before = versions.active();
    let level = if level == 0 { SUPPORTED } else { level };
    if level <= before {
        return Ok(pb::FinalizeUpgradeResponse { active_feature_level: before, previous_feature_level: before });
    }
    let cmd = Command { stamped_at_ms: 0, operation: Operation::SetFeatureLevel { level } };
    // Ask every member now: a node just rolled back must not pass on a
    // report from before.
    let asked = Instant::now();
    ask_members(consensus, pool).await;
    consensus.check_level_within(&cmd.operation, asked.elapsed())?;
    consensus.propose(cmd).await?;
    tracing::warn!(level, before, "feature level raised: no member can go back to an older release now");
    Ok(pb::FinalizeUpgradeResponse {
        active_feature_level: versions.active().max(level),
        previous_feature_level: before,
    })
}

/// Longest wait for one member's answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);

/// Ask every other member for its level (the clock probe, which carries
/// it), and note the answers.
async fn ask_members(consensus: &Consensus, pool: &ChannelPool) {
    let me = consensus.id();
    let asks = consensus.view().addrs.into_iter().filter(|(id, _)| *id != me).map(|(id, addr)| async move {
        let Ok(channel) = pool.get(&addr) else { return };
        let mut req = tonic::Request::new(pb::ClockRequest {});
        req.set_timeout(ASK_TIMEOUT);
        consensus.identity().envelope(id, false).write(req.metadata_mut());
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        if let Ok(Ok(reply)) = tokio::time::timeout(ASK_TIMEOUT, client.clock(req)).await {
            let reply = reply.into_inner();
            consensus.identity().versions().note(id, reply.feature_level, &reply.version);
        }
    });
    futures::future::join_all(asks).await;
}
