//! Free disk space, this node's and its peers': the space guard.
//!
//! Like etcd's NOSPACE alarm: a node whose data dir's filesystem has less
//! free space than `--min-free-disk` raises an alarm. The timekeeper
//! measures this node every second and learns the peers' figures from the
//! same exchange that samples their clocks. While any voter is in alarm:
//! - a leader in alarm hands leadership to a voter with room;
//! - the leader refuses writes that add data (schedule, register) with
//!   `RESOURCE_EXHAUSTED`, naming the nodes short of space; reads, workers'
//!   completions, cancels and dead-letter purges keep working, so that
//!   operators can drain and purge their way out.
//!
//! The alarm is advisory state on each node, not replicated: it only decides
//! what new writes are accepted, never how an entry applies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::DiskThreshold;

/// A peer's figures older than this are not trusted (the peer is down or
/// cut off; if it is down it cannot fill up either).
const FRESH_FOR: Duration = Duration::from_secs(10);

/// One node's disk as measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskReport {
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Free space is under the node's `--min-free-disk`.
    pub alarm: bool,
}

/// Free and total bytes of the filesystem holding `path` (space available
/// to unprivileged users, as RocksDB will see it).
pub fn measure(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let block = s.fragment_size() as u64;
    Ok((s.blocks_available() as u64 * block, s.blocks() as u64 * block))
}

pub fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[derive(Clone)]
pub struct DiskSpace {
    inner: Arc<Inner>,
}

struct Inner {
    me: u64,
    dir: PathBuf,
    threshold: DiskThreshold,
    local: Mutex<DiskReport>,
    peers: Mutex<BTreeMap<u64, (DiskReport, Instant)>>,
}

impl DiskSpace {
    pub fn new(me: u64, dir: PathBuf, threshold: DiskThreshold) -> DiskSpace {
        DiskSpace { inner: Arc::new(Inner { me, dir, threshold, local: Mutex::default(), peers: Mutex::default() }) }
    }

    pub fn threshold(&self) -> DiskThreshold {
        self.inner.threshold
    }

    /// Measure this node's data dir now; logs when the alarm starts or
    /// ends. A failed measurement keeps the last figures.
    pub fn refresh(&self) -> DiskReport {
        let (free, total) = match measure(&self.inner.dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.inner.dir.display(), "cannot measure free disk space");
                return self.local();
            }
        };
        let need = self.inner.threshold.required(total);
        let report = DiskReport { free_bytes: free, total_bytes: total, alarm: free < need };
        let before = std::mem::replace(&mut *lock(&self.inner.local), report);
        if report.alarm && !before.alarm {
            tracing::warn!(
                free = %human(free),
                min_free_disk = %self.inner.threshold,
                dir = %self.inner.dir.display(),
                "disk space alarm: this node's data dir is short of space; the cluster refuses new tasks until space is freed"
            );
        } else if before.alarm && !report.alarm {
            tracing::info!(free = %human(free), "disk space alarm cleared");
        }
        report
    }

    /// Bytes this node may still write before its free space falls under
    /// `--min-free-disk`, measured now (unbounded if it cannot be
    /// measured: a full disk then fails the write instead).
    pub fn room(&self) -> u64 {
        match measure(&self.inner.dir) {
            Ok((free, total)) => free.saturating_sub(self.inner.threshold.required(total)),
            Err(_) => u64::MAX,
        }
    }

    /// This node's last measurement.
    pub fn local(&self) -> DiskReport {
        *lock(&self.inner.local)
    }

    /// A peer's figures, from its answer to a clock sample.
    pub fn note_peer(&self, id: u64, report: DiskReport) {
        lock(&self.inner.peers).insert(id, (report, Instant::now()));
    }

    /// The figures of every node known recently (this one included).
    pub fn known(&self) -> BTreeMap<u64, DiskReport> {
        let mut out: BTreeMap<u64, DiskReport> = lock(&self.inner.peers)
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < FRESH_FOR)
            .map(|(id, (r, _))| (*id, *r))
            .collect();
        out.insert(self.inner.me, self.local());
        out
    }

    /// Whether `id` is known to have room (recent figures, no alarm).
    pub fn has_room(&self, id: u64) -> bool {
        self.known().get(&id).is_some_and(|r| !r.alarm)
    }

    /// Why writes that add data are refused: `Some` while any member with
    /// recent figures (this node, and the peers it samples) is in alarm.
    /// Called per schedule request: no allocation unless refusing.
    pub fn refusal(&self) -> Option<String> {
        let any_alarm =
            self.local().alarm || lock(&self.inner.peers).values().any(|(r, at)| r.alarm && at.elapsed() < FRESH_FOR);
        if !any_alarm {
            return None;
        }
        let short: Vec<String> = self
            .known()
            .iter()
            .filter(|(_, r)| r.alarm)
            .map(|(id, r)| format!("node {id} ({} free)", human(r.free_bytes)))
            .collect();
        Some(format!(
            "the cluster is out of disk: free space on {} (under --min-free-disk); reads, completions, cancels and dead-letter purges still work",
            short.join(", ")
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_voter_in_alarm_refuses_writes_and_stale_figures_do_not_count() {
        let disk = DiskSpace::new(1, PathBuf::from("/"), DiskThreshold::Bytes(0));
        assert!(!disk.refresh().alarm, "no threshold, no alarm");
        assert!(disk.refusal().is_none());
        disk.note_peer(3, DiskReport { free_bytes: 1 << 30, total_bytes: 1 << 31, alarm: false });
        assert!(disk.refusal().is_none());
        disk.note_peer(2, DiskReport { free_bytes: 5 << 20, total_bytes: 1 << 30, alarm: true });
        let why = disk.refusal().expect("node 2 is short of space");
        assert!(why.contains("node 2 (5.0 MiB free)") && !why.contains("node 3"), "{why}");
        assert!(disk.has_room(1) && !disk.has_room(2) && disk.has_room(3) && !disk.has_room(4), "node 4 is unknown");
        lock(&disk.inner.peers).get_mut(&2).expect("node 2").1 = Instant::now() - FRESH_FOR;
        assert!(disk.refusal().is_none(), "stale figures do not count");
    }

    #[test]
    fn a_threshold_above_the_free_space_raises_the_alarm() {
        let (free, _) = measure(Path::new("/")).expect("statvfs /");
        let disk = DiskSpace::new(1, PathBuf::from("/"), DiskThreshold::Bytes(free + (1 << 40)));
        assert!(disk.refresh().alarm);
        assert!(disk.refusal().is_some());
    }
}
