//! `drover server`: run one node until SIGINT/SIGTERM, then stop gracefully.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{parse_duration, shutdown_signal, CliError};
use drover::config::{parse_peers, DiskThreshold, NodeConfig};
use drover::node::{NodeError, RunningNode};

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    # a new 3-node cluster: start all three the same way (or only one with --bootstrap)\n  \
    P=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\n  \
    drover server --id 1 --listen 127.0.0.1:7001 --data-dir d1 --peers $P --bootstrap\n  \
    drover server --id 2 --listen 127.0.0.1:7002 --data-dir d2 --peers $P --bootstrap\n  \
    drover server --id 3 --listen 127.0.0.1:7003 --data-dir d3 --peers $P --bootstrap\n\n  \
    # a restart needs only id, listen and data dir\n  \
    drover server --id 1 --listen 127.0.0.1:7001 --data-dir d1")]
pub struct ServerArgs {
    /// Read flags from this TOML file, under their long names (`max-payload = 524288`); a flag or DROVER_* variable given too wins.
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (and where each value came from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id: a positive integer, unique in the cluster, never reused.
    #[arg(long, env = "DROVER_ID")]
    pub id: u64,
    /// Address to listen on (Raft and the public API share it).
    #[arg(long, env = "DROVER_LISTEN", value_name = "HOST:PORT")]
    pub listen: String,
    /// Where this node keeps its log, state and snapshots.
    #[arg(long, env = "DROVER_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Initial members as ID=HOST:PORT, comma-separated (used with --bootstrap).
    #[arg(long, env = "DROVER_PEERS", value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Initialise a new cluster from --peers: on one node, or on every node with the same --peers (a node a peer reached first joins). A node whose data dir holds another membership refuses to start with it.
    #[arg(long)]
    pub bootstrap: bool,
    /// Serve Prometheus metrics (/metrics), /healthz and /readyz over HTTP on this address (off unless given).
    #[arg(long, env = "DROVER_HTTP_LISTEN", value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// With auth on, serve /metrics without a token or client certificate (for a Prometheus that cannot send one). Off by default: /metrics then needs a reader grant for every callback.
    #[arg(long, env = "DROVER_OPEN_METRICS")]
    pub open_metrics: bool,
    /// Address others use to reach this node, if not the --peers entry or --listen.
    #[arg(long, env = "DROVER_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Largest task payload in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_payload: usize,
    /// Most tasks in one ScheduleBatch (1..=10000).
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// Largest gRPC message a client or worker may send, bytes (1 MiB to 256 MiB); larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_message_bytes: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection.
    #[arg(long, default_value_t = 1024)]
    pub max_streams_per_connection: u32,
    /// Most tasks of one callback a worker session may ask for at once (its concurrency).
    #[arg(long, default_value_t = 10_000)]
    pub max_worker_credits: u32,
    /// Most tasks in one page of `task list` (ListTasks).
    #[arg(long, default_value_t = 10_000)]
    pub max_page: u32,
    /// Leader heartbeat period.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, help_heading = "Timings")]
    pub heartbeat: std::time::Duration,
    /// Minimum election timeout (the maximum is twice this); at least 3 heartbeats. A leader that has not heard from a quorum for twice this fails writes at once.
    #[arg(long, default_value = "300ms", value_parser = parse_duration, help_heading = "Timings")]
    pub election_timeout: std::time::Duration,
    /// How long a request waits for a leader to be elected before failing with UNAVAILABLE; at least twice the election timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration, help_heading = "Timings")]
    pub leader_wait: std::time::Duration,
    /// Longest a write waits for its commit before its outcome is reported unknown; below --forward-timeout.
    #[arg(long, default_value = "2500ms", value_parser = parse_duration, help_heading = "Timings")]
    pub propose_timeout: std::time::Duration,
    /// Longest a follower waits for the leader to answer a forwarded request; below a client's 4 s attempt timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration, help_heading = "Timings")]
    pub forward_timeout: std::time::Duration,
    /// Upper bound on one membership change (add, promote, remove a node).
    /// With the leader wait and the proposal timeout it stays below the
    /// 40 s a client waits for a membership change (at most about 32 s).
    #[arg(long, default_value = "15s", value_parser = parse_duration, help_heading = "Timings")]
    pub membership_timeout: std::time::Duration,
    /// How long a new node's address gets to answer before add-node gives up.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Timings")]
    pub probe_timeout: std::time::Duration,
    /// At shutdown, how long a leader waits to hand leadership over.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Timings")]
    pub hand_over_timeout: std::time::Duration,
    /// A leader whose log fsync has been running this long hands leadership to another voter (a stalling disk must not hold up the cluster).
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Timings")]
    pub max_fsync_stall: std::time::Duration,
    /// At shutdown, how long open connections get to finish.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Timings")]
    pub drain_timeout: std::time::Duration,
    /// Build a snapshot after this many log entries.
    #[arg(long, default_value_t = 50_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for followers that lag a little.
    #[arg(long, default_value_t = 10_000)]
    pub logs_to_keep: u64,
    /// Accept tasks for unregistered callbacks, registering them with defaults.
    #[arg(long, env = "DROVER_AUTO_REGISTER")]
    pub auto_register: bool,
    /// A waiting task gains one priority level per this much waiting, so low priorities are never starved.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub priority_aging: std::time::Duration,
    /// Largest offset of this node's wall clock from the cluster's median before it counts as wrong: it then warns and does not lead.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, env = "DROVER_MAX_CLOCK_OFFSET")]
    pub max_clock_offset: std::time::Duration,
    /// Least free space on the data dir's filesystem, as a size (256MiB, 1GB) or a percentage (5%): under it the node refuses to start, a leader hands over, and the cluster refuses new tasks (RESOURCE_EXHAUSTED) until space is freed. 0 turns the guard off.
    #[arg(long, default_value = "256MiB", value_parser = DiskThreshold::parse, env = "DROVER_MIN_FREE_DISK")]
    pub min_free_disk: DiskThreshold,
    /// Keep succeeded tasks this long after they finish, for callbacks that set no retention ("forever" keeps them). Give every node the same value: the leader's applies.
    #[arg(long, default_value = "24h", value_parser = parse_retention, help_heading = "Retention", env = "DROVER_RETAIN_SUCCEEDED")]
    pub retain_succeeded: Retain,
    /// Keep cancelled tasks this long ("forever" keeps them).
    #[arg(long, default_value = "24h", value_parser = parse_retention, help_heading = "Retention", env = "DROVER_RETAIN_CANCELLED")]
    pub retain_cancelled: Retain,
    /// Keep failed tasks this long ("forever" keeps them).
    #[arg(long, default_value = "7d", value_parser = parse_retention, help_heading = "Retention", env = "DROVER_RETAIN_FAILED")]
    pub retain_failed: Retain,
    /// Keep dead tasks (the dead-letter queue) this long ("forever" keeps them).
    #[arg(long, default_value = "30d", value_parser = parse_retention, help_heading = "Retention", env = "DROVER_RETAIN_DEAD")]
    pub retain_dead: Retain,
    /// Most rows retention deletes per Raft entry (1..=10000).
    #[arg(long, default_value_t = 1000, help_heading = "Retention")]
    pub gc_batch: usize,
    /// Serve TLS with this certificate (PEM, chain first); with --tls-key. Files are re-read on SIGHUP and when they change.
    #[arg(long, env = "DROVER_TLS_CERT", value_name = "FILE.pem", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY", value_name = "FILE.pem", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// Verify clients' certificates against these CAs (mutual TLS; optional unless --require-client-cert).
    #[arg(long, env = "DROVER_CLIENT_CA", value_name = "FILE.pem", requires = "tls_cert", help_heading = "TLS")]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate.
    #[arg(long, env = "DROVER_REQUIRE_CLIENT_CERT", requires = "tls_cert", help_heading = "TLS")]
    pub require_client_cert: bool,
    /// The CA of the nodes' certificates: a caller of the Raft service must present one that names a node (node-ID.drover), and this node trusts it when dialing peers.
    #[arg(long, env = "DROVER_PEER_CA", value_name = "FILE.pem", requires = "tls_cert", help_heading = "TLS")]
    pub peer_ca: Option<PathBuf>,
    /// The certificate this node presents to its peers (naming node-ID.drover); often the same file as --tls-cert.
    #[arg(long, env = "DROVER_PEER_CERT", value_name = "FILE.pem", requires_all = ["peer_key", "peer_ca"], help_heading = "TLS")]
    pub peer_cert: Option<PathBuf>,
    /// The private key of --peer-cert.
    #[arg(long, env = "DROVER_PEER_KEY", value_name = "FILE.pem", requires = "peer_cert", help_heading = "TLS")]
    pub peer_key: Option<PathBuf>,
    /// Serve plaintext on an address other hosts can reach (refused without it): anyone there can call any API.
    #[arg(long, env = "DROVER_INSECURE", help_heading = "TLS")]
    pub insecure: bool,
    /// Messages buffered per worker stream (tests shrink it to overflow it).
    #[arg(long, default_value_t = 4096, hide = true)]
    pub worker_buffer: usize,
}

impl ServerArgs {
    pub fn to_config(&self) -> Result<NodeConfig, CliError> {
        let mut c = NodeConfig::new(self.id, self.listen.clone(), self.data_dir.clone());
        if let Some(p) = &self.peers {
            c.peers = parse_peers(p).map_err(|e| CliError(format!("--peers: {e}")))?;
        }
        c.bootstrap = self.bootstrap;
        c.advertise = self.advertise.clone();
        c.http_listen = self.http_listen.clone();
        c.open_metrics = self.open_metrics;
        c.limits.max_payload_bytes = self.max_payload;
        c.limits.max_batch = self.max_batch;
        c.limits.max_message_bytes = self.max_message_bytes;
        // A batch's payloads must fit in one message, with room for the rest.
        c.limits.max_batch_bytes = c.limits.max_batch_bytes.min(self.max_message_bytes / 4 * 3);
        c.limits.max_streams_per_connection = self.max_streams_per_connection;
        c.limits.max_worker_credits = self.max_worker_credits;
        c.limits.max_page = self.max_page;
        c.raft.heartbeat_ms = self.heartbeat.as_millis() as u64;
        c.set_election_timeout(self.election_timeout);
        c.timing.leader_wait = self.leader_wait;
        c.timing.propose_timeout = self.propose_timeout;
        c.timing.forward_timeout = self.forward_timeout;
        c.timing.membership_change = self.membership_timeout;
        c.timing.probe = self.probe_timeout;
        c.timing.hand_over = self.hand_over_timeout;
        c.timing.drain = self.drain_timeout;
        c.timing.fsync_stall = self.max_fsync_stall;
        c.raft.snapshot_every = self.snapshot_every;
        c.raft.logs_to_keep = self.logs_to_keep;
        c.auto_register = self.auto_register;
        c.priority_aging = self.priority_aging;
        c.worker_buffer = self.worker_buffer;
        c.max_clock_offset = self.max_clock_offset;
        c.min_free_disk = self.min_free_disk;
        c.retention.succeeded = self.retain_succeeded.0;
        c.retention.cancelled = self.retain_cancelled.0;
        c.retention.failed = self.retain_failed.0;
        c.retention.dead = self.retain_dead.0;
        c.retention.batch = self.gc_batch;
        c.insecure = self.insecure;
        c.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(drover::tls::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
                require_client_cert: self.require_client_cert,
                peer_ca: self.peer_ca.clone(),
                peer_cert: self.peer_cert.clone(),
                peer_key: self.peer_key.clone(),
            }),
            _ => None,
        };
        if c.tls.is_some() && c.peers.len() > 1 && self.peer_cert.is_none() {
            return Err(CliError(
                "with TLS, give --peer-cert, --peer-key and --peer-ca too: nodes must prove to each other who they are"
                    .into(),
            ));
        }
        c.validate().map_err(CliError)?;
        Ok(c)
    }
}

/// A retention period; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain(pub Option<std::time::Duration>);

/// "24h", "7d", or "forever".
pub fn parse_retention(s: &str) -> Result<Retain, String> {
    if s == "forever" {
        return Ok(Retain(None));
    }
    parse_duration(s).map(|d| Retain(Some(d)))
}

/// Exit status of a node that stopped because its storage failed (a full
/// disk, an I/O error, corruption): EX_IOERR from sysexits.h. A supervisor
/// (`Restart=on-failure`, a Kubernetes restart policy) starts it again once
/// the cause is fixed; it then catches up from the others.
pub const EXIT_STORAGE_FAILED: u8 = 74;

/// Exit status of a node that refuses to start, or stops, because its data
/// is damaged (a WAL record before the last, a table block, a Raft record
/// that fails its checksum): EX_DATAERR from sysexits.h. Restarting does
/// not help; `drover admin rejoin --data-dir DIR` does (README, "When a
/// disk fills or fails"). Tell a supervisor not to restart on it
/// (systemd: `RestartPreventExitStatus=65`).
pub const EXIT_DATA_DAMAGED: u8 = 65;

/// Exit status of a node that stopped because a peer sent it log entries
/// of a feature level this binary does not speak (the cluster's level was
/// raised past it, e.g. this node was rolled back after the finalize):
/// EX_PROTOCOL from sysexits.h. It never applies part of them or skips
/// them; restarting on the same binary does not help, a newer one does
/// (README, "Upgrading"). Tell a supervisor not to restart on it.
pub const EXIT_TOO_NEW: u8 = 76;

/// Run a node until SIGINT/SIGTERM (exit 0 after a graceful stop) or until
/// its storage fails (exit [`EXIT_STORAGE_FAILED`]) or is found damaged
/// (exit [`EXIT_DATA_DAMAGED`], also when it refuses to start).
pub async fn run(args: &ServerArgs) -> Result<ExitCode, CliError> {
    let config = args.to_config()?;
    let data_dir = config.data_dir.clone();
    let node = match RunningNode::start(config, None).await {
        Ok(node) => node,
        Err(e @ NodeError::TooNew { .. }) => {
            tracing::error!(data_dir = %data_dir.display(), exit_code = EXIT_TOO_NEW, "{e}");
            return Ok(ExitCode::from(EXIT_TOO_NEW));
        }
        Err(e @ NodeError::Corrupt { .. }) => {
            tracing::error!(data_dir = %data_dir.display(), exit_code = EXIT_DATA_DAMAGED, "{e}");
            return Ok(ExitCode::from(EXIT_DATA_DAMAGED));
        }
        Err(e) => return Err(e.into()),
    };
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        cause = node.failure() => Some(cause.unwrap_or_else(|| "Raft stopped unexpectedly".into())),
    };
    match failure {
        None => {
            tracing::info!("shutting down");
            node.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Some(cause) => {
            if let Some(why) = node.too_new() {
                tracing::error!(data_dir = %data_dir.display(), exit_code = EXIT_TOO_NEW, "stopping this node: {why}");
                node.shutdown().await;
                return Ok(ExitCode::from(EXIT_TOO_NEW));
            }
            if let Some(damage) = node.damaged() {
                tracing::error!(
                    data_dir = %data_dir.display(),
                    exit_code = EXIT_DATA_DAMAGED,
                    "damaged data found, stopping this node: {damage}. It must not run from this data dir; run `drover admin rejoin --data-dir {}` (README, \"When a disk fills or fails\")",
                    data_dir.display()
                );
                node.shutdown().await;
                return Ok(ExitCode::from(EXIT_DATA_DAMAGED));
            }
            tracing::error!(
                data_dir = %data_dir.display(),
                exit_code = EXIT_STORAGE_FAILED,
                "storage failed, stopping this node: {cause}"
            );
            node.shutdown().await;
            Ok(ExitCode::from(EXIT_STORAGE_FAILED))
        }
    }
}
