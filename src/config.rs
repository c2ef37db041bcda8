//! Typed node configuration. Every limit says its unit and range; `validate`
//! rejects nonsense before anything starts.

use std::path::PathBuf;
use std::time::Duration;

/// Request limits enforced at the API edge.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest task payload, bytes. Default 1 MiB; at most 32 MiB.
    pub max_payload_bytes: usize,
    /// Most tasks in one `ScheduleBatch`. Default 1000; 1..=10,000.
    pub max_batch: usize,
    /// Longest callback name, bytes. Fixed at 128.
    pub max_callback_len: usize,
    /// Longest idempotency key, bytes. Fixed at 256.
    pub max_key_len: usize,
    /// How far ahead a task may be scheduled. Default 366 days.
    pub max_schedule_ahead: Duration,
    /// Most payload bytes in one `ScheduleBatch`. Default 48 MiB (below the
    /// 64 MiB gRPC message limit).
    pub max_batch_bytes: usize,
    /// Largest gRPC message a client or worker may send (and this node
    /// replies with). Default 64 MiB; 1 MiB ..= 256 MiB. Node-to-node
    /// messages keep [`crate::net::MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Most concurrent HTTP/2 streams (calls) on one connection. Default 1024.
    pub max_streams_per_connection: u32,
    /// Most tasks a worker session may run at once, per callback. Default 10,000.
    pub max_worker_credits: u32,
    /// Most tasks in one page of `ListTasks`. Default 10,000.
    pub max_page: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_batch: 1000,
            max_callback_len: 128,
            max_key_len: 256,
            max_schedule_ahead: Duration::from_secs(366 * 24 * 3600),
            max_batch_bytes: 48 << 20,
            max_message_bytes: 64 << 20,
            max_streams_per_connection: 1024,
            max_worker_credits: 10_000,
            max_page: 10_000,
        }
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// Leader heartbeat period, ms. Default 100.
    pub heartbeat_ms: u64,
    /// Minimum election timeout, ms (the maximum is twice this). Default 300;
    /// must exceed the heartbeat period several times over.
    pub election_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last. Default 50,000.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers. Default 10,000.
    pub logs_to_keep: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning { heartbeat_ms: 100, election_timeout_ms: 300, snapshot_every: 50_000, logs_to_keep: 10_000 }
    }
}

/// A client's per-attempt timeout (`drover::client`): a node that does not
/// answer within it is given up on and the next one tried.
pub const CLIENT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// A client's per-attempt timeout for a membership change (add, promote,
/// remove, replace, transfer): above the longest a node may work on one
/// ([`Timing::membership_forward_timeout`]), so the client never gives up
/// on a change the cluster is still making.
pub const CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(40);

/// Every request-level timeout of a node, in one place. Their order is
/// checked by [`NodeConfig::validate`]: a proposal gives up before the
/// follower that forwarded it stops waiting for the leader, which gives up
/// before a client's attempt does. Whoever times out first is the one
/// closest to the work, and no caller waits on a request nobody is doing.
///
/// ```text
///   propose_timeout (2.5 s) < forward_timeout (3 s) < CLIENT_ATTEMPT_TIMEOUT (4 s)
///   propose_timeout + leader_wait + membership_change (20.5 s)
///     < membership_forward_timeout (22.5 s) < CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT (40 s)
///   quorum_silence = 2 x election timeout (0.6 s)
/// ```
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a request waits for a leader to be elected before it fails
    /// with `UNAVAILABLE`. Default 3 s.
    pub leader_wait: Duration,
    /// Longest a proposal waits for its commit before the caller is told
    /// the outcome is unknown. Default 2.5 s; below `forward_timeout`.
    pub propose_timeout: Duration,
    /// Longest a follower waits for the leader to answer a forwarded
    /// request. Default 3 s; below the client's attempt timeout.
    pub forward_timeout: Duration,
    /// A leader that has not heard from a quorum for this long fails writes
    /// at once (it is likely cut off). Always twice the election timeout.
    pub quorum_silence: Duration,
    /// Upper bound on one membership change (add, promote, remove). 15 s.
    pub membership_change: Duration,
    /// How long an address gets to answer before `add-node` gives up. 2 s.
    pub probe: Duration,
    /// At shutdown: the wait for a leadership hand-over (2 s), then for open
    /// connections to close (5 s).
    pub hand_over: Duration,
    pub drain: Duration,
    /// A leader whose log sync (fsync) has been running this long hands
    /// leadership over: a stalling disk must not hold up the cluster. 2 s.
    pub fsync_stall: Duration,
}

impl Timing {
    /// Longest a follower waits for the leader to answer a forwarded
    /// membership change: the change's own bounds (its retire or promote
    /// entry, the wait for a named leader, the change itself) and 2 s.
    pub fn membership_forward_timeout(&self) -> Duration {
        self.propose_timeout + self.leader_wait + self.membership_change + Duration::from_secs(2)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            leader_wait: Duration::from_secs(3),
            propose_timeout: Duration::from_millis(2_500),
            forward_timeout: Duration::from_secs(3),
            quorum_silence: Duration::from_millis(600),
            membership_change: Duration::from_secs(15),
            probe: Duration::from_secs(2),
            hand_over: Duration::from_secs(2),
            drain: Duration::from_secs(5),
            fsync_stall: Duration::from_secs(2),
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster and never reused.
    pub id: u64,
    /// Address to bind, `host:port`.
    pub listen: String,
    /// Address other nodes and clients use to reach this node. Defaults to
    /// the entry for `id` in `peers`, else `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Initial members `(id, addr)`, used with `bootstrap`.
    pub peers: Vec<(u64, String)>,
    /// Initialise a new cluster from `peers` (on one node or on every node
    /// with the same `peers`; ignored when the data dir already belongs to
    /// an initialised node whose voters are `peers`, refused when they are
    /// not).
    pub bootstrap: bool,
    pub limits: Limits,
    pub raft: RaftTuning,
    pub timing: Timing,
    /// Schedule against unregistered callbacks by registering them with
    /// default settings (otherwise `NOT_FOUND`). Default off.
    pub auto_register: bool,
    /// A waiting task gains one priority level per this much waiting past
    /// its run-at, so low priorities are never starved. Default 10 s.
    pub priority_aging: Duration,
    /// Messages buffered per worker stream; an assignment that finds the
    /// buffer full is released (not counted as an attempt). Default 4096.
    pub worker_buffer: usize,
    /// Largest offset of this node's wall clock from the cluster's median
    /// (of the voters' clocks) before the node counts as skewed: it warns
    /// and does not lead. 10 ms ..= 1 h; default 500 ms.
    pub max_clock_offset: Duration,
    /// Least free space on the data dir's filesystem: below it the node
    /// refuses to start, a leader hands leadership to a member with room,
    /// and the cluster refuses writes that add data. Default 256 MiB.
    pub min_free_disk: DiskThreshold,
    /// How long finished tasks of callbacks that set no retention of
    /// their own are kept, from when they finished (replicated time). Used
    /// by the leader's collector; give every node the same values.
    pub retention: RetentionDefaults,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` over HTTP
    /// (`host:port`); off when `None`.
    pub http_listen: Option<String>,
    /// Serve `/metrics` to anyone even with auth on (a Prometheus that
    /// cannot send a token). Off: with auth on, `/metrics` needs a reader
    /// grant for every callback (a token or a client certificate).
    pub open_metrics: bool,
    /// Serve TLS (and authenticate peers) with these files; `None`:
    /// plaintext, which [`NodeConfig::validate`] allows on loopback only,
    /// unless `insecure`.
    pub tls: Option<crate::tls::ServerTls>,
    /// Allow plaintext on an address other hosts can reach.
    pub insecure: bool,
}

/// Whether `addr` (`host:port`) can be reached from this host only.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Cluster-wide retention defaults; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDefaults {
    /// Default 24 h.
    pub succeeded: Option<Duration>,
    /// Default 24 h.
    pub cancelled: Option<Duration>,
    /// Default 7 days.
    pub failed: Option<Duration>,
    /// Default 30 days.
    pub dead: Option<Duration>,
    /// Most rows deleted per Raft entry. Default 1000; 1..=10,000.
    pub batch: usize,
}

impl Default for RetentionDefaults {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RetentionDefaults {
            succeeded: Some(Duration::from_secs(DAY)),
            cancelled: Some(Duration::from_secs(DAY)),
            failed: Some(Duration::from_secs(7 * DAY)),
            dead: Some(Duration::from_secs(30 * DAY)),
            batch: 1000,
        }
    }
}

/// A free-space threshold: bytes, or a percentage of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskThreshold {
    Bytes(u64),
    Percent(f64),
}

impl DiskThreshold {
    /// "256MiB", "1GB", "0", "5%".
    pub fn parse(s: &str) -> Result<DiskThreshold, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("{s:?} is not a percentage like 5%"))?;
            if !(0.0..100.0).contains(&p) {
                return Err(format!("{s:?}: a percentage must be at least 0 and below 100"));
            }
            return Ok(DiskThreshold::Percent(p));
        }
        let size: bytesize::ByteSize =
            s.parse().map_err(|e| format!("{s:?} is not a size like 256MiB, 1GB or 5% ({e})"))?;
        Ok(DiskThreshold::Bytes(size.as_u64()))
    }

    /// The free bytes required on a filesystem of `total` bytes.
    pub fn required(&self, total: u64) -> u64 {
        match *self {
            DiskThreshold::Bytes(b) => b,
            DiskThreshold::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl std::fmt::Display for DiskThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskThreshold::Bytes(b) => write!(f, "{}", bytesize::ByteSize::b(*b).display().iec()),
            DiskThreshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl NodeConfig {
    pub fn new(id: u64, listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            id,
            listen: listen.into(),
            advertise: None,
            data_dir: data_dir.into(),
            peers: Vec::new(),
            bootstrap: false,
            limits: Limits::default(),
            raft: RaftTuning::default(),
            timing: Timing::default(),
            auto_register: false,
            priority_aging: Duration::from_secs(10),
            worker_buffer: 4096,
            max_clock_offset: Duration::from_millis(500),
            min_free_disk: DiskThreshold::Bytes(256 << 20),
            retention: RetentionDefaults::default(),
            http_listen: None,
            open_metrics: false,
            tls: None,
            insecure: false,
        }
    }

    /// Whether this node serves plaintext where other hosts can reach it
    /// (allowed only with `insecure`; the node then warns).
    pub fn plaintext_exposed(&self) -> bool {
        self.tls.is_none() && !is_loopback(&self.listen)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be a positive integer (0 is reserved)".into());
        }
        let l = &self.limits;
        if !((1 << 20)..=(256 << 20)).contains(&l.max_message_bytes) {
            return Err("--max-message-bytes must be between 1 MiB and 256 MiB".into());
        }
        if l.max_streams_per_connection == 0 || l.max_worker_credits == 0 || l.max_page == 0 {
            return Err("--max-streams-per-connection, --max-worker-credits and --max-page must be at least 1".into());
        }
        if self.plaintext_exposed() && !self.insecure {
            return Err(format!(
                "--listen {} is reachable from other hosts, and without TLS anyone there could call any API, \
                 the Raft service included. Give --tls-cert and --tls-key (and --peer-cert, --peer-key, \
                 --peer-ca; `drover admin certs` makes them), or --insecure to accept the risk",
                self.listen
            ));
        }
        if let Some(http) =
            self.http_listen.as_deref().filter(|h| self.tls.is_none() && !self.insecure && !is_loopback(h))
        {
            return Err(format!(
                "--http-listen {http} is reachable from other hosts: give the TLS flags (the console is then served over TLS too) or --insecure"
            ));
        }
        if self.max_clock_offset < Duration::from_millis(10) || self.max_clock_offset > Duration::from_secs(3600) {
            return Err("--max-clock-offset must be between 10ms and 1h".into());
        }
        if self.worker_buffer == 0 {
            return Err("--worker-buffer must be at least 1".into());
        }
        if self.retention.batch == 0 || self.retention.batch > 10_000 {
            return Err("--gc-batch must be between 1 and 10000".into());
        }
        if self.bootstrap && !self.peers.is_empty() && !self.peers.iter().any(|(id, _)| *id == self.id) {
            return Err(format!("--peers must include this node (id {})", self.id));
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("--peers lists a node id twice".into());
        }
        if self.peers.iter().any(|(id, _)| *id == 0) {
            return Err("--peers: node ids must be positive".into());
        }
        let l = &self.limits;
        if l.max_payload_bytes == 0 || l.max_payload_bytes > 32 << 20 {
            return Err("--max-payload must be between 1 byte and 32 MiB".into());
        }
        if l.max_batch == 0 || l.max_batch > 10_000 {
            return Err("--max-batch must be between 1 and 10000".into());
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_ms < 3 * r.heartbeat_ms {
            return Err("the election timeout must be at least 3 heartbeat periods".into());
        }
        let t = &self.timing;
        if t.quorum_silence != Duration::from_millis(2 * r.election_timeout_ms) {
            return Err("the quorum-silence bound must be twice the election timeout (use set_election_timeout)".into());
        }
        if t.propose_timeout >= t.forward_timeout || t.forward_timeout >= CLIENT_ATTEMPT_TIMEOUT {
            return Err(format!(
                "timeouts must nest: propose ({:?}) < forward ({:?}) < client attempt ({CLIENT_ATTEMPT_TIMEOUT:?})",
                t.propose_timeout, t.forward_timeout
            ));
        }
        if t.membership_forward_timeout() >= CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT {
            return Err(format!(
                "--membership-timeout ({:?}) is too long: with the leader wait and the proposal timeout it must stay \
                 below a client's membership attempt ({CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT:?}) by 2 s",
                t.membership_change
            ));
        }
        if t.leader_wait < Duration::from_millis(2 * r.election_timeout_ms) {
            return Err("the leader wait must cover at least one election (twice the election timeout)".into());
        }
        if self.priority_aging.is_zero() {
            return Err("--priority-aging must be positive".into());
        }
        if r.snapshot_every == 0 {
            return Err("--snapshot-every must be positive".into());
        }
        Ok(())
    }

    /// Set the election timeout and what follows from it.
    pub fn set_election_timeout(&mut self, d: Duration) {
        self.raft.election_timeout_ms = d.as_millis() as u64;
        self.timing.quorum_silence = d * 2;
    }

    /// The address this node tells others to use.
    pub fn advertise_addr(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        self.peers.iter().find(|(id, _)| *id == self.id).map(|(_, a)| a.clone()).unwrap_or_else(|| self.listen.clone())
    }
}

/// Parse `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<Vec<(u64, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, addr) = p.split_once('=').ok_or_else(|| format!("peer {p:?} is not ID=HOST:PORT"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("peer {p:?}: {id:?} is not a node id"))?;
            let addr = addr.trim();
            if !addr.contains(':') {
                return Err(format!("peer {p:?}: address {addr:?} has no port"));
            }
            Ok((id, addr.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_allowed_on_loopback_only_unless_insecure() {
        for a in ["127.0.0.1:7001", "localhost:7001", "[::1]:7001", "127.0.0.2:1"] {
            assert!(is_loopback(a), "{a}");
        }
        for a in ["0.0.0.0:7001", "10.0.0.5:7001", "node-1:7001", "[::]:7001"] {
            assert!(!is_loopback(a), "{a}");
        }
        let mut c = NodeConfig::new(1, "0.0.0.0:7001", "/tmp/x");
        assert!(c.validate().unwrap_err().contains("--insecure"));
        c.insecure = true;
        assert_eq!(c.validate(), Ok(()));
        let mut c = NodeConfig::new(1, "127.0.0.1:7001", "/tmp/x");
        c.http_listen = Some("0.0.0.0:8001".into());
        assert!(c.validate().unwrap_err().contains("--http-listen"));
    }

    #[test]
    fn peers_parse_and_reject_garbage() {
        assert_eq!(parse_peers("1=a:1,2=b:2").unwrap(), vec![(1, "a:1".to_string()), (2, "b:2".to_string())]);
        assert!(parse_peers("1=a").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("a:1").is_err());
    }

    #[test]
    fn disk_thresholds_parse_sizes_and_percentages() {
        assert_eq!(DiskThreshold::parse("256MiB"), Ok(DiskThreshold::Bytes(256 << 20)));
        assert_eq!(DiskThreshold::parse("1GB"), Ok(DiskThreshold::Bytes(1_000_000_000)));
        assert_eq!(DiskThreshold::parse("0"), Ok(DiskThreshold::Bytes(0)));
        assert_eq!(DiskThreshold::parse("5%"), Ok(DiskThreshold::Percent(5.0)));
        assert_eq!(DiskThreshold::Percent(5.0).required(1000), 50);
        assert!(DiskThreshold::parse("100%").is_err());
        assert!(DiskThreshold::parse("lots").is_err());
        assert_eq!(DiskThreshold::Bytes(256 << 20).to_string(), "256.0 MiB");
    }

    #[test]
    fn validate_catches_duplicate_ids_and_bad_timing() {
        let mut c = NodeConfig::new(1, "127.0.0.1:1", "/tmp/x");
        c.peers = vec![(1, "a:1".into()), (1, "b:2".into())];
        assert!(c.validate().is_err());
        let mut c = NodeConfig::new(1, "127.0.0.1:1", "/tmp/x");
        c.set_election_timeout(Duration::from_millis(100));
        assert!(c.validate().is_err(), "under 3 heartbeats");
        let mut c = NodeConfig::new(1, "127.0.0.1:1", "/tmp/x");
        c.timing.propose_timeout = Duration::from_secs(10);
        assert!(c.validate().unwrap_err().contains("nest"), "a proposal outliving the forward is refused");
        let mut c = NodeConfig::new(1, "127.0.0.1:1", "/tmp/x");
        c.timing.membership_change = Duration::from_secs(35);
        let e = c.validate().unwrap_err();
        assert!(e.contains("--membership-timeout"), "a change outliving the client's wait is refused: {e}");
        assert!(NodeConfig::new(0, "x:1", "/tmp/x").validate().is_err());
        assert!(NodeConfig::new(1, "127.0.0.1:1", "/tmp/x").validate().is_ok());
    }
}
