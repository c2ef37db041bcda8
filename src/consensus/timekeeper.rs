//! The timekeeper: samples the voters' wall clocks for the
//! [`ProposerClock`]'s reference, and keeps a node whose own clock is wrong
//! from leading.
//!
//! Every second it asks each other voter for its wall clock (the `Clock`
//! RPC, over the node's shared channels) and records the offset with the
//! round trip split in half. From the samples, the clock computes the
//! reference (the median of the voters' clocks). When a majority agrees on
//! it and this node's own clock is off by more than `--max-clock-offset`:
//! - it logs a warning (once per change) and reports itself skewed in
//!   `NodeStatus`;
//! - it stops starting elections (`elect(false)`), so it does not take
//!   over when a leader fails; it still votes;
//! - if it leads, it hands leadership to the voter that is most up to date
//!   among those whose clocks agree with the reference.
//!
//! The same exchange tells each node its peers' free disk space
//! ([`super::disk`]); a leader short of disk hands leadership to a voter
//! with room.
//!
//! Rule: a node leads only if its clock is within the bound of a
//! majority's median, or if no majority agrees at all (then no clock can be
//! called wrong, and availability wins). Replicated time does not depend on
//! the leader's clock in any case (see [`crate::clock`]).

use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::clock::{ClockSample, ProposerClock, Reference};
use super::disk::{DiskReport, DiskSpace};
use super::Consensus;
use crate::net::ChannelPool;
use crate::pb;

/// How often the clocks are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often while too few voters have been sampled (a new or restarted
/// node): replicated time of a new cluster waits for the first samples.
const SAMPLE_EVERY_AT_START: Duration = Duration::from_millis(100);
/// Longest wait for one sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether a node whose view of the reference is `r` has a wrong clock.
pub fn is_skewed(r: &Reference, max_offset: Duration) -> bool {
    r.trusted && r.own_offset_ms().unsigned_abs() > max_offset.as_millis() as u64
}

/// Sample peer `id`'s clock (and learn its disk space). The probe carries
/// this node's cluster envelope: a node of another cluster on that address
/// refuses it, and is not sampled.
async fn sample(pool: &ChannelPool, consensus: &Consensus, id: u64, addr: &str) -> Option<(ClockSample, DiskReport)> {
    let channel = pool.get(addr).ok()?;
    let mut client = pb::cluster_client::ClusterClient::new(channel);
    let sent = Instant::now();
    let mut req = tonic::Request::new(pb::ClockRequest {});
    req.set_timeout(SAMPLE_TIMEOUT);
    consensus.identity().envelope(id, consensus.holds_nothing()).write(req.metadata_mut());
    let reply = match tokio::time::timeout(SAMPLE_TIMEOUT, client.clock(req)).await.ok()? {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            consensus.identity().refused_by(id, "clock probe", &status);
            return None;
        }
    };
    // Its feature level (a 0.1.0 node reports none: level 1).
    consensus.identity().versions().note(id, reply.feature_level, &reply.version);
    let disk =
        DiskReport { free_bytes: reply.disk_free_bytes, total_bytes: reply.disk_total_bytes, alarm: reply.disk_alarm };
    Some((ClockSample::new(sent, Instant::now(), reply.unix_ms), disk))
}

/// Run until `stop`.
#[tracing::instrument(name = "timekeeper", skip_all, fields(node_id = consensus.id()))]
pub async fn run(
    consensus: Consensus,
    pool: ChannelPool,
    clock: ProposerClock,
    disk: DiskSpace,
    stop: CancellationToken,
) {
    let me = consensus.id();
    let mut skewed = false;
    let mut campaigning = true;
    loop {
        let every = if clock.reference().is_some() { SAMPLE_EVERY } else { SAMPLE_EVERY_AT_START };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let short_of_disk = disk.refresh().alarm;
        let view = consensus.view();
        clock.set_voters(view.voters.clone());
        let probes = view.addrs.iter().filter(|(id, _)| **id != me).map(|(id, addr)| {
            let (pool, consensus, addr, id) = (&pool, &consensus, addr.clone(), *id);
            async move { (id, sample(pool, consensus, id, &addr).await) }
        });
        for (id, s) in futures::future::join_all(probes).await {
            if let Some((s, d)) = s {
                clock.record(id, s);
                disk.note_peer(id, d);
            }
        }
        // A node short of disk does not take over leadership either.
        if campaigning != (!short_of_disk && !skewed) {
            campaigning = !campaigning;
            consensus.set_campaigning(campaigning);
        }
        if short_of_disk && view.leader == Some(me) {
            let room = |v: u64| disk.has_room(v);
            if let Some(to) = consensus.hand_over(consensus.timing().hand_over, room).await {
                tracing::warn!(to, "handed leadership over: this node is short of disk space");
            }
        }
        let Some(reference) = clock.reference() else { continue };
        let now_skewed = is_skewed(&reference, clock.max_offset());
        if now_skewed != skewed {
            skewed = now_skewed;
            if skewed {
                tracing::warn!(
                    offset_ms = reference.own_offset_ms(),
                    max_offset_ms = clock.max_offset().as_millis() as u64,
                    "this node's wall clock is off the cluster's median: it will not lead until it is fixed"
                );
            } else {
                tracing::info!(
                    offset_ms = reference.own_offset_ms(),
                    "this node's wall clock agrees with the cluster again"
                );
            }
            if campaigning != (!skewed && !short_of_disk) {
                campaigning = !campaigning;
                consensus.set_campaigning(campaigning);
            }
        }
        if skewed && view.leader == Some(me) {
            hand_over(&consensus, &clock, reference).await;
        }
    }
}

/// A skewed leader hands leadership to the most up-to-date voter whose
/// clock agrees with the reference.
async fn hand_over(consensus: &Consensus, clock: &ProposerClock, reference: Reference) {
    let offsets = clock.offsets();
    let bound = clock.max_offset().as_millis() as i64;
    let good = |v: u64| offsets.get(&v).is_some_and(|o| (o - reference.median_offset_ms).abs() <= bound);
    tracing::warn!("handing leadership over: this node's wall clock is wrong");
    if consensus.hand_over(consensus.timing().hand_over, good).await.is_none() {
        tracing::warn!("no voter with a good clock took over; staying leader for now");
    }
}
