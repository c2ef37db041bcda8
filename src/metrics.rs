//! Prometheus metrics: every name drover exports, the process-wide
//! recorder, and the helpers the layers call.
//!
//! Three kinds, by where they are counted:
//! - **in apply** (`drover_tasks_*`, `drover_task_*`, `drover_schedule_*`):
//!   counted as the state machine applies entries, so every node that has
//!   applied the same log shows the same counts (since its process
//!   started), and the schedule-to-start and run-time histograms use
//!   replicated time;
//! - **at scrape time** (queues, workers, Raft, RocksDB, process): gauges
//!   read from the node's state when `/metrics` is fetched; the queue and
//!   worker gauges are the leader's view (a follower's queue gauges are its
//!   own index, workers connect to the leader only);
//! - **at the gRPC edge**: handling time per method and status code.
//!
//! Labels are callbacks, states, priorities, methods and peers; never task
//! ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const TASKS_SCHEDULED: &str = "drover_tasks_scheduled_total";
pub const TASK_TRANSITIONS: &str = "drover_task_transitions_total";
pub const SCHEDULE_TO_START: &str = "drover_task_schedule_to_start_seconds";
pub const RUN_TIME: &str = "drover_task_run_seconds";
pub const SCHEDULE_FIRES: &str = "drover_schedule_fires_total";
pub const SCHEDULE_SKIPPED: &str = "drover_schedule_skipped_slots_total";
pub const QUEUE_DEPTH: &str = "drover_queue_depth";
pub const OLDEST_READY_AGE: &str = "drover_queue_oldest_ready_age_seconds";
pub const RUNNING: &str = "drover_tasks_running";
pub const GATES: &str = "drover_gates";
pub const WORKERS: &str = "drover_workers_connected";
pub const WORKER_CREDITS: &str = "drover_worker_credits";
pub const GRPC_HANDLING: &str = "drover_grpc_server_handling_seconds";
pub const RAFT_HAS_LEADER: &str = "drover_raft_has_leader";
pub const RAFT_IS_LEADER: &str = "drover_raft_is_leader";
pub const RAFT_LEADER_CHANGES: &str = "drover_raft_leader_changes_seen_total";
pub const RAFT_TERM: &str = "drover_raft_term";
pub const RAFT_COMMITTED: &str = "drover_raft_committed_index";
pub const RAFT_APPLIED: &str = "drover_raft_applied_index";
pub const RAFT_LAST_LOG: &str = "drover_raft_last_log_index";
pub const RAFT_QUORUM_ACK_AGE: &str = "drover_raft_quorum_ack_age_seconds";
pub const RAFT_REPLICATION_LAG: &str = "drover_raft_replication_lag_entries";
pub const RAFT_PROPOSALS_FAILED: &str = "drover_raft_proposals_failed_total";
pub const RAFT_PROPOSALS_PENDING: &str = "drover_raft_proposals_pending";
pub const RAFT_LOG_FSYNC: &str = "drover_raft_log_fsync_seconds";
pub const RAFT_APPLY_BATCH: &str = "drover_raft_apply_batch_seconds";
pub const CLUSTER_INFO: &str = "drover_cluster_info";
pub const PEER_REFUSALS: &str = "drover_peer_refusals_total";
pub const ROCKSDB_LIVE_DATA: &str = "drover_rocksdb_live_data_bytes";
pub const ROCKSDB_PENDING_COMPACTION: &str = "drover_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_MEMTABLES: &str = "drover_rocksdb_memtable_bytes";

/// Bucket bounds (seconds) of the latency histograms: 1 ms to 5 min, with
/// 5 s (ATF's "start within 5 seconds") a bound.
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Another recorder may be installed already (an embedding
                // program's): then ours renders only what it is given.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                handle
            }
            // Only a bucket list that is empty fails; ours is not.
            Err(e) => unreachable!("metrics buckets: {e}"),
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(TASKS_SCHEDULED, "Tasks created, per callback (counted in apply).");
    describe_counter!(TASK_TRANSITIONS, "Task state changes, per callback and new state (counted in apply).");
    describe_histogram!(
        SCHEDULE_TO_START,
        Unit::Seconds,
        "From a task's run-at to its first start, replicated time, per callback and priority."
    );
    describe_histogram!(RUN_TIME, Unit::Seconds, "From a run's start to its end, per callback.");
    describe_counter!(SCHEDULE_FIRES, "Slots of periodic schedules fired (counted in apply).");
    describe_counter!(SCHEDULE_SKIPPED, "Slots of periodic schedules skipped (catch-up or overlap policy).");
    describe_gauge!(QUEUE_DEPTH, "Pending tasks, per callback, state (ready, scheduled) and priority.");
    describe_gauge!(OLDEST_READY_AGE, Unit::Seconds, "How long the oldest ready task of a callback has waited.");
    describe_gauge!(RUNNING, "Tasks leased to workers, per callback.");
    describe_gauge!(GATES, "Gates in force, per mode.");
    describe_gauge!(WORKERS, "Worker sessions connected to this node (the leader).");
    describe_gauge!(WORKER_CREDITS, "Worker credits offered, per callback.");
    describe_histogram!(GRPC_HANDLING, Unit::Seconds, "gRPC handling time, per method and status code.");
    describe_gauge!(RAFT_HAS_LEADER, "1 if this node knows a leader.");
    describe_gauge!(RAFT_IS_LEADER, "1 if this node leads.");
    describe_counter!(RAFT_LEADER_CHANGES, "Leader changes this node has seen.");
    describe_gauge!(RAFT_TERM, "Current Raft term.");
    describe_gauge!(RAFT_COMMITTED, "Highest log index known committed.");
    describe_gauge!(RAFT_APPLIED, "Highest log index applied to the state machine.");
    describe_gauge!(RAFT_LAST_LOG, "Last log index on this node.");
    describe_gauge!(RAFT_QUORUM_ACK_AGE, Unit::Seconds, "Leader only: time since a quorum last acknowledged it.");
    describe_gauge!(RAFT_REPLICATION_LAG, "Leader only: entries each peer is behind the leader's last log index.");
    describe_counter!(RAFT_PROPOSALS_FAILED, "Proposals that failed (not applied, or outcome unknown).");
    describe_gauge!(RAFT_PROPOSALS_PENDING, "Proposals waiting for their entry to apply.");
    describe_histogram!(RAFT_LOG_FSYNC, Unit::Seconds, "Raft log group-commit fsync time.");
    describe_histogram!(RAFT_APPLY_BATCH, Unit::Seconds, "Time to apply one batch of entries.");
    describe_gauge!(
        CLUSTER_INFO,
        "1, labelled with this node's cluster ID and node id (absent until the node knows its cluster ID)."
    );
    describe_counter!(
        PEER_REFUSALS,
        "Messages between nodes refused as of another cluster or meant for another node, per peer; direction=in: this node refused the peer's, out: the peer refused this node's."
    );
    describe_gauge!(ROCKSDB_LIVE_DATA, Unit::Bytes, "RocksDB estimate of live data.");
    describe_gauge!(ROCKSDB_PENDING_COMPACTION, Unit::Bytes, "RocksDB estimate of bytes pending compaction.");
    describe_gauge!(ROCKSDB_MEMTABLES, Unit::Bytes, "RocksDB memtable size.");
}

/// A task was created (apply).
pub fn task_scheduled(callback: &str) {
    counter!(TASKS_SCHEDULED, "callback" => callback.to_string()).increment(1);
    TOTALS.scheduled.fetch_add(1, Ordering::Relaxed);
}

/// A task changed state (apply).
pub fn task_transition(callback: &str, state: &'static str) {
    counter!(TASK_TRANSITIONS, "callback" => callback.to_string(), "state" => state).increment(1);
    match state {
        "running" => TOTALS.started.fetch_add(1, Ordering::Relaxed),
        "succeeded" | "failed" | "dead" | "cancelled" => TOTALS.finished.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

/// A task started its first attempt `delay_ms` after its run-at (apply,
/// replicated time).
pub fn first_start(callback: &str, priority: u8, delay_ms: u64) {
    histogram!(SCHEDULE_TO_START, "callback" => callback.to_string(), "priority" => priority.to_string())
        .record(delay_ms as f64 / 1000.0);
    let bucket = LATENCY_BUCKETS.iter().position(|b| delay_ms as f64 / 1000.0 <= *b).unwrap_or(LATENCY_BUCKETS.len());
    TOTALS.start_delay[bucket].fetch_add(1, Ordering::Relaxed);
}

/// A run ended after `ms` (apply, replicated time).
pub fn run_ended(callback: &str, ms: u64) {
    histogram!(RUN_TIME, "callback" => callback.to_string()).record(ms as f64 / 1000.0);
}

/// A periodic schedule fired `fired` slots and skipped `skipped` (apply).
pub fn schedule_fired(schedule: &str, fired: u64, skipped: u64) {
    if fired > 0 {
        counter!(SCHEDULE_FIRES, "schedule" => schedule.to_string()).increment(fired);
    }
    if skipped > 0 {
        counter!(SCHEDULE_SKIPPED, "schedule" => schedule.to_string()).increment(skipped);
    }
}

/// Process-wide totals across every callback, for the console's recent
/// rates (the Prometheus recorder cannot be read back): tasks scheduled,
/// runs started, tasks finished, and first starts per schedule-to-start
/// bucket (the last slot is "over 5 minutes").
struct Totals {
    scheduled: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    start_delay: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

static TOTALS: Totals = Totals {
    scheduled: AtomicU64::new(0),
    started: AtomicU64::new(0),
    finished: AtomicU64::new(0),
    start_delay: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
};

/// A reading of the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TotalsSnapshot {
    pub scheduled: u64,
    pub started: u64,
    pub finished: u64,
    pub start_delay: [u64; LATENCY_BUCKETS.len() + 1],
}

/// Read the totals now.
pub fn totals() -> TotalsSnapshot {
    let mut start_delay = [0; LATENCY_BUCKETS.len() + 1];
    for (out, n) in start_delay.iter_mut().zip(&TOTALS.start_delay) {
        *out = n.load(Ordering::Relaxed);
    }
    TotalsSnapshot {
        scheduled: TOTALS.scheduled.load(Ordering::Relaxed),
        started: TOTALS.started.load(Ordering::Relaxed),
        finished: TOTALS.finished.load(Ordering::Relaxed),
        start_delay,
    }
}

/// The 95th percentile (seconds) of the schedule-to-start delays counted
/// per bucket in `counts` (as [`TotalsSnapshot::start_delay`]), linearly
/// interpolated within its bucket as Prometheus' `histogram_quantile`
/// does; `None` without any. Past the last bound it is that bound.
pub fn start_delay_p95(counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = 0.95 * total as f64;
    let mut below = 0u64;
    for (i, n) in counts.iter().enumerate() {
        if (below + n) as f64 >= rank && *n > 0 {
            let Some(upper) = LATENCY_BUCKETS.get(i) else {
                return LATENCY_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / *n as f64);
        }
        below += n;
    }
    LATENCY_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_interpolates_within_the_bucket_that_holds_it() {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(start_delay_p95(&counts), None);
        // 100 starts within 1 ms: the 95th is at 95% of the first bucket.
        counts[0] = 100;
        let p = start_delay_p95(&counts).unwrap();
        assert!((p - 0.00095).abs() < 1e-9, "{p}");
        // 90 fast and 10 between 5 s and 10 s: the 95th is half-way there.
        counts[0] = 90;
        counts[11] = 10;
        let p = start_delay_p95(&counts).unwrap();
        assert!((p - 7.5).abs() < 1e-9, "{p}");
        // Past the last bound: the last bound.
        let mut late = [0u64; LATENCY_BUCKETS.len() + 1];
        late[LATENCY_BUCKETS.len()] = 3;
        assert_eq!(start_delay_p95(&late), Some(300.0));
    }

    #[test]
    fn totals_count_starts_finishes_and_delays() {
        let before = totals();
        task_scheduled("t");
        task_transition("t", "running");
        task_transition("t", "retry_wait");
        task_transition("t", "dead");
        first_start("t", 0, 6_000);
        let after = totals();
        // Other tests of this process may count too: at least ours.
        assert!(after.scheduled > before.scheduled);
        assert!(after.started > before.started);
        assert!(after.finished > before.finished);
        assert!(after.start_delay[11] > before.start_delay[11], "6 s falls in (5, 10]");
    }
}
