//! A stalling disk must not hold up the cluster: while this node's log sync
//! (fsync) has been running longer than `--max-fsync-stall`, it proposes
//! nothing and, if it leads, sends no heartbeats, so the followers elect a
//! new leader as they would for a leader gone silent. (openraft's leadership
//! transfer waits on the leader's own log I/O, so it cannot be used here.)
//! Followers with a slow disk only slow their own acknowledgements, which a
//! majority does not wait for.

use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::consensus::Consensus;
use crate::raft::log_store::SyncWatch;

/// How often the sync in progress is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Syncs must have been quick for this long before the node counts as
/// healthy again.
const HEALTHY_AFTER: Duration = Duration::from_secs(2);

pub async fn watch(consensus: Consensus, sync: SyncWatch, bound: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut stalled_since: Option<Instant> = None;
    let mut last_stall = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sync.stalled_for().filter(|d| *d >= bound) {
            Some(stalled) => {
                last_stall = Instant::now();
                if stalled_since.is_none() {
                    stalled_since = Some(Instant::now());
                    let leading = consensus.leadership().leader.is_some_and(|p| p.id == consensus.id());
                    tracing::warn!(
                        stalled_ms = stalled.as_millis() as u64,
                        bound_ms = bound.as_millis() as u64,
                        leading,
                        "this node's log fsync is stalling: it takes no writes{}",
                        if leading { " and steps down as leader" } else { "" }
                    );
                    consensus.set_disk_stalled(true);
                }
            }
            None if stalled_since.is_some() && last_stall.elapsed() >= HEALTHY_AFTER => {
                let lasted = stalled_since.take().map(|s| s.elapsed()).unwrap_or_default();
                tracing::info!(lasted_ms = lasted.as_millis() as u64, "this node's log fsyncs are quick again");
                consensus.set_disk_stalled(false);
            }
            None => {}
        }
    }
}
