//! Which cluster this node belongs to, and the check every message between
//! nodes passes before anything else reads it.
//!
//! Every node-to-node request (Raft's append, vote, pre-vote, snapshot and
//! leader transfer; forwarded client requests; clock probes; the add-node
//! handshake) carries an [`Envelope`] in its gRPC metadata: the sender's
//! cluster ID (if it has one yet), its node ID and address, the node ID the
//! request is meant for, and whether the sender holds nothing beyond its
//! bootstrap membership ("unborn"). The receiver judges it ([`judge`])
//! before it decodes the message, so a refused message never reaches Raft
//! and its term is never seen. The rules (DESIGN.md, "Cluster identity"):
//!
//! 1. meant for another node ID: refused (a `--peers` or membership entry
//!    that maps an ID to another node's address);
//! 2. both sides have an ID and they differ: refused, "belongs to another
//!    cluster";
//! 3. the receiver has an ID, the sender has none and holds more than its
//!    bootstrap membership: refused (a data dir of another cluster, or of
//!    this one before it learned the ID; a leader's entries teach it);
//! 4. anything else is admitted. A node without an ID takes the ID of the
//!    first leader whose entries it accepts ([`Identity::adopt`]), keeps
//!    it on disk, and from then on refuses every other.
//!
//! A refusal is `FAILED_PRECONDITION` carrying the `x-drover-refused`
//! header. The sender recognises it by that header ([`is_refusal`]) and
//! reports the peer unreachable to openraft, so it neither steps down nor
//! takes the other side's term. Both sides remember the last refusal per
//! peer (for `cluster status`), log it at most once per peer every 10 s,
//! and count it (`drover_peer_refusals_total`).
//!
//! Where the ID comes from: the state machine (the first `SetClusterId`
//! applied, [`Identity::applied`]), or, before this node applied one, the
//! ID it took from a leader or was given when it was added (kept in the
//! `meta` column family).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocksdb::DB;
use tokio::sync::watch;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::versions::{Versions, LEVEL_HEADER};
use crate::domain::feature::{LEVEL_IDENTITY, SUPPORTED};
use crate::domain::ClusterId;
use crate::store::{cf, keys, StoreError};

/// The sender's cluster ID (32 hex digits); absent while it has none.
pub const CLUSTER_HEADER: &str = "x-drover-cluster-id";
/// The sender's node ID.
pub const FROM_HEADER: &str = "x-drover-from-node";
/// The sender's address as its peers reach it.
pub const FROM_ADDR_HEADER: &str = "x-drover-from-addr";
/// The node ID the request is meant for.
pub const TO_HEADER: &str = "x-drover-to-node";
/// "1": the sender holds nothing beyond its bootstrap membership.
pub const UNBORN_HEADER: &str = "x-drover-unborn";
/// Set on a refusal ("cluster"), so that the sender knows it by more than
/// its status code.
pub const REFUSED_HEADER: &str = "x-drover-refused";

/// Log a refusal at most once per peer and direction in this long.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// `cluster status` shows a refusal this recent.
const SHOW_FOR: Duration = Duration::from_secs(30);
/// Peers remembered; beyond it the table starts over (a bound against a
/// caller that makes up node ids).
const MAX_PEERS: usize = 1024;

/// What a node-to-node request says about where it comes from and goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub cluster: Option<ClusterId>,
    pub from: u64,
    pub from_addr: String,
    pub to: u64,
    /// The sender holds nothing beyond its bootstrap membership.
    pub unborn: bool,
    /// The request carried no envelope: a 0.1.0 peer, admitted only while
    /// the cluster's feature level is 1 (`from` is then 0: unknown).
    pub legacy: bool,
}

impl Envelope {
    /// Put it in a request's metadata.
    pub fn write(&self, md: &mut MetadataMap) {
        let mut put = |key: &'static str, value: String| {
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(key, v);
            }
        };
        if let Some(id) = self.cluster {
            put(CLUSTER_HEADER, id.to_string());
        }
        put(FROM_HEADER, self.from.to_string());
        put(FROM_ADDR_HEADER, self.from_addr.clone());
        put(TO_HEADER, self.to.to_string());
        if self.unborn {
            put(UNBORN_HEADER, "1".into());
        }
    }

    /// Read it from a request's headers: `Ok(None)` if the request carries
    /// none (it is not from a drover node of this build).
    pub fn read(headers: &http::HeaderMap) -> Result<Option<Envelope>, String> {
        let get = |key: &str| headers.get(key).map(|v| v.to_str().map_err(|_| format!("{key} is not text")));
        let (Some(from), Some(to)) = (get(FROM_HEADER), get(TO_HEADER)) else {
            return Ok(None);
        };
        let number = |key: &str, v: &str| v.parse::<u64>().map_err(|_| format!("{key} {v:?} is not a node id"));
        let from = number(FROM_HEADER, from?)?;
        let to = number(TO_HEADER, to?)?;
        let cluster = match get(CLUSTER_HEADER) {
            Some(v) => Some(v?.parse::<ClusterId>()?),
            None => None,
        };
        let from_addr = match get(FROM_ADDR_HEADER) {
            Some(v) => v?.to_string(),
            None => "?".to_string(),
        };
        let unborn = matches!(get(UNBORN_HEADER), Some(Ok("1")));
        Ok(Some(Envelope { cluster, from, from_addr, to, unborn, legacy: false }))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Of another cluster, or meant for another node.
    Foreign(String),
    /// The sender has no ID yet but holds data, and this node has one.
    Unnamed(String),
    /// No envelope, or a malformed one.
    Malformed(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Foreign(m) | Refusal::Unnamed(m) | Refusal::Malformed(m) => m,
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> tonic::Status {
        match r {
            Refusal::Malformed(m) => tonic::Status::invalid_argument(m),
            Refusal::Foreign(m) | Refusal::Unnamed(m) => refusal_status(m),
        }
    }
}

fn refusal_status(message: String) -> tonic::Status {
    let mut md = MetadataMap::new();
    md.insert(REFUSED_HEADER, MetadataValue::from_static("cluster"));
    tonic::Status::with_metadata(tonic::Code::FailedPrecondition, message, md)
}

/// Whether a status is a peer's refusal of this node's message.
pub fn is_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.metadata().contains_key(REFUSED_HEADER)
}

fn show(id: Option<ClusterId>) -> String {
    id.map_or_else(|| "no cluster ID yet".to_string(), |id| format!("cluster {id}"))
}

/// The rules, as a pure function: what node `me` (at `my_addr`, of
/// `mine`) makes of `env`'s `what`.
pub fn judge(me: u64, my_addr: &str, mine: Option<ClusterId>, env: &Envelope, what: &str) -> Result<(), Refusal> {
    let admitted = env.to == me
        && match (mine, env.cluster) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => env.unborn,
            (None, _) => true,
        };
    if admitted {
        return Ok(());
    }
    // Refused: say by whom, of whom, and why.
    let sender = format!("node {} at {} ({})", env.from, env.from_addr, show(env.cluster));
    let receiver = format!("node {me} at {my_addr} ({})", show(mine));
    if env.to != me {
        return Err(Refusal::Foreign(format!(
            "{what} from {sender} was meant for node {}, but {receiver} received it: the address belongs to another \
             cluster member; the sender's --peers or membership maps node {} to the wrong address",
            env.to, env.to
        )));
    }
    match (mine, env.cluster) {
        (Some(a), Some(b)) if a != b => Err(Refusal::Foreign(format!(
            "{what} from {sender} refused by {receiver}: the sender belongs to another cluster (README, \"Cluster \
             identity\": move the stray node's data dir aside and add it back with `drover cluster add-node` under \
             a new id)"
        ))),
        _ => Err(Refusal::Unnamed(format!(
            "{what} from {sender}, which holds data, refused by {receiver}: it belongs to another cluster, or has \
             not learned this cluster's ID yet (the leader's entries teach it)"
        ))),
    }
}

/// Which way a refusal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// This node refused the peer's message.
    In,
    /// The peer refused this node's message.
    Out,
}

/// The last refusal with one peer, and when it was last logged.
#[derive(Default)]
struct PeerRefusals {
    last: Option<(Instant, String)>,
    logged: HashMap<Direction, (Instant, u64)>,
}

/// This node's identity and its refusals. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    /// The address peers reach this node at (its advertised address).
    addr: String,
    /// Where an ID taken from a leader is kept; `None` in tests.
    db: Option<Arc<DB>>,
    current: watch::Sender<Option<ClusterId>>,
    /// The envelope's headers that do not change per message, made once:
    /// this node's id and address, and its cluster ID (set with it). A std
    /// lock: read per message, written once, never held across I/O.
    from_header: Option<MetadataValue<tonic::metadata::Ascii>>,
    addr_header: Option<MetadataValue<tonic::metadata::Ascii>>,
    cluster_header: std::sync::RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>,
    /// Refusals per peer, either way. A std mutex: short sections with no
    /// I/O and no `.await` under it.
    peers: Mutex<HashMap<u64, PeerRefusals>>,
    /// Messages this node refused since it started, per kind ("vote",
    /// "append", ...), for `NodeStatus`. A std mutex, as above.
    refused: Mutex<BTreeMap<String, u64>>,
    /// The cluster's feature level and the peers' (see [`Versions`]).
    versions: Versions,
}

impl Identity {
    /// This node's identity as its data dir says: the ID its state machine
    /// applied, else one it took from a leader, else none.
    pub fn open(node_id: u64, addr: String, db: Arc<DB>) -> Result<Identity, StoreError> {
        let id = read_cluster_id(&db)?;
        Ok(Identity::new(node_id, addr, Some(db), id))
    }

    /// An identity kept in memory only (tests).
    pub fn detached(node_id: u64, addr: impl Into<String>, id: Option<ClusterId>) -> Identity {
        Identity::new(node_id, addr.into(), None, id)
    }

    fn new(node_id: u64, addr: String, db: Option<Arc<DB>>, id: Option<ClusterId>) -> Identity {
        let (current, _) = watch::channel(id);
        Identity {
            inner: Arc::new(Inner {
                node_id,
                from_header: MetadataValue::try_from(node_id.to_string()).ok(),
                addr_header: MetadataValue::try_from(addr.clone()).ok(),
                cluster_header: std::sync::RwLock::new(id.and_then(cluster_header)),
                addr,
                db,
                current,
                peers: Mutex::default(),
                refused: Mutex::default(),
                versions: Versions::default(),
            }),
        }
    }

    /// Record a new ID (both its value and its header).
    fn set(&self, id: ClusterId) {
        *self.inner.cluster_header.write().unwrap_or_else(|p| p.into_inner()) = cluster_header(id);
    }

    /// Stamp a request from this node to node `to` with its envelope (the
    /// same headers as [`Identity::envelope`] writes, from values made once).
    pub fn stamp(&self, md: &mut MetadataMap, to: u64, unborn: bool) {
        let cluster = self.inner.cluster_header.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(v) = cluster {
            md.insert(CLUSTER_HEADER, v);
        }
        if let Some(v) = &self.inner.from_header {
            md.insert(FROM_HEADER, v.clone());
        }
        if let Some(v) = &self.inner.addr_header {
            md.insert(FROM_ADDR_HEADER, v.clone());
        }
        if let Ok(v) = MetadataValue::try_from(to.to_string()) {
            md.insert(TO_HEADER, v);
        }
        if unborn {
            md.insert(UNBORN_HEADER, MetadataValue::from_static("1"));
        }
        md.insert(LEVEL_HEADER, MetadataValue::from(SUPPORTED));
    }

    /// The cluster's feature level and the peers' reports.
    pub fn versions(&self) -> &Versions {
        &self.inner.versions
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    pub fn cluster_id(&self) -> Option<ClusterId> {
        *self.inner.current.borrow()
    }

    /// Changes of the ID (from none to one, once).
    pub fn watch(&self) -> watch::Receiver<Option<ClusterId>> {
        self.inner.current.subscribe()
    }

    /// Wait until this node knows its cluster's ID, at most `timeout`.
    pub async fn wait_named(&self, timeout: Duration) -> bool {
        let mut rx = self.watch();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
    }

    /// The envelope of a request from this node to node `to`.
    pub fn envelope(&self, to: u64, unborn: bool) -> Envelope {
        Envelope {
            cluster: self.cluster_id(),
            from: self.inner.node_id,
            from_addr: self.inner.addr.clone(),
            to,
            unborn,
            legacy: false,
        }
    }

    /// Judge a request's envelope (its `what`: "append", "vote", ...) from
    /// its headers, before anything else is read. A refusal is remembered,
    /// logged (throttled) and counted.
    pub fn admit(
        &self,
        headers: &http::HeaderMap,
        remote: Option<SocketAddr>,
        what: &str,
    ) -> Result<Envelope, Refusal> {
        let env = match Envelope::read(headers) {
            Ok(Some(env)) => env,
            // A 0.1.0 peer sends no envelope: admitted while the cluster
            // runs at 0.1.0's level (a rolling upgrade), refused after.
            Ok(None) if self.inner.versions.active() < LEVEL_IDENTITY => {
                return Ok(Envelope {
                    cluster: None,
                    from: 0,
                    from_addr: remote.map_or_else(|| "?".into(), |a| a.to_string()),
                    to: self.inner.node_id,
                    unborn: false,
                    legacy: true,
                })
            }
            Ok(None) => {
                return Err(Refusal::Malformed(format!(
                    "{what} from {} names no sender or target node ({FROM_HEADER}, {TO_HEADER}): it is not from a \
                     drover node of this build (a 0.1.0 node is refused once the cluster's feature level is \
                     {LEVEL_IDENTITY} or more)",
                    remote.map_or_else(|| "?".into(), |a| a.to_string())
                )))
            }
            Err(e) => return Err(Refusal::Malformed(format!("{what}: bad envelope: {e}"))),
        };
        match judge(self.inner.node_id, &self.inner.addr, self.cluster_id(), &env, what) {
            Ok(()) => Ok(env),
            Err(refusal) => {
                let message = match remote {
                    Some(r) => format!("{} [connection from {r}]", refusal.message()),
                    None => refusal.message().to_string(),
                };
                self.note(env.from, Direction::In, what, &message);
                Err(match refusal {
                    Refusal::Foreign(_) => Refusal::Foreign(message),
                    Refusal::Unnamed(_) => Refusal::Unnamed(message),
                    Refusal::Malformed(_) => Refusal::Malformed(message),
                })
            }
        }
    }

    /// A peer answered this node's `what` with `status`: if it is a
    /// refusal, remember, log and count it, and say so.
    pub fn refused_by(&self, peer: u64, what: &str, status: &tonic::Status) -> bool {
        if !is_refusal(status) {
            return false;
        }
        self.note(peer, Direction::Out, what, status.message());
        true
    }

    /// How many messages of each kind this node refused since it started.
    pub fn refused_counts(&self) -> BTreeMap<String, u64> {
        self.inner.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last refusal with `peer` (either way) if it is recent: for
    /// `cluster status`.
    pub fn peer_error(&self, peer: u64) -> Option<String> {
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (at, message) = peers.get(&peer)?.last.as_ref()?;
        (at.elapsed() < SHOW_FOR).then(|| message.clone())
    }

    fn note(&self, peer: u64, direction: Direction, what: &str, message: &str) {
        let label = match direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        metrics::counter!(
            crate::metrics::PEER_REFUSALS,
            "direction" => label,
            "peer" => peer.to_string(),
            "message" => what.to_string()
        )
        .increment(1);
        if direction == Direction::In {
            let mut refused = self.inner.refused.lock().unwrap_or_else(|p| p.into_inner());
            *refused.entry(what.to_string()).or_default() += 1;
        }
        let now = Instant::now();
        let suppressed = {
            let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
                peers.clear();
            }
            let entry = peers.entry(peer).or_default();
            entry.last = Some((now, message.to_string()));
            match entry.logged.get_mut(&direction) {
                Some((at, skipped)) if now.duration_since(*at) < LOG_EVERY => {
                    *skipped += 1;
                    None
                }
                Some((at, skipped)) => {
                    *at = now;
                    Some(std::mem::take(skipped))
                }
                None => {
                    entry.logged.insert(direction, (now, 0));
                    Some(0)
                }
            }
        };
        let Some(suppressed) = suppressed else { return };
        match direction {
            Direction::In => tracing::warn!(peer, suppressed, "refused a message from another cluster: {message}"),
            Direction::Out => {
                tracing::warn!(peer, suppressed, "node {peer} refused this node's message: {message}")
            }
        }
    }

    /// The state machine applied `id` (or installed a snapshot holding it).
    /// The log is the authority: a different ID taken earlier is replaced.
    pub fn applied(&self, id: ClusterId) {
        self.set(id);
        let before = self.inner.current.send_replace(Some(id));
        match before {
            Some(old) if old == id => {}
            Some(old) => {
                tracing::warn!(%old, new = %id, "the log names another cluster ID than this node took; the log wins")
            }
            None => tracing::info!(cluster_id = %id, "this node's cluster ID"),
        }
    }

    /// Take `id` from a leader whose entries this node accepted (or that
    /// added it), if this node has no ID yet: kept on disk (synced) before
    /// it counts. Returns whether it was taken.
    pub async fn adopt(&self, id: ClusterId, from: u64) -> Result<bool, StoreError> {
        if self.cluster_id().is_some() {
            return Ok(false);
        }
        if let Some(db) = self.inner.db.clone() {
            crate::blocking::run(move || write_adopted(&db, id)).await.map_err(StoreError::Io)??;
        }
        // Another request may have taken it meanwhile: it is the same ID
        // (any leader this node accepts carries the cluster's one ID).
        let taken = self.inner.current.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(id);
                true
            } else {
                false
            }
        });
        if taken {
            self.set(id);
            tracing::info!(cluster_id = %id, from, "took the cluster ID from node {from}");
        }
        Ok(taken)
    }
}

fn cluster_header(id: ClusterId) -> Option<MetadataValue<tonic::metadata::Ascii>> {
    MetadataValue::try_from(id.to_string()).ok()
}

/// The cluster ID a data dir holds: applied by its state machine, else
/// taken from a leader; `None` for a new node or a data dir written before
/// cluster IDs.
pub fn read_cluster_id(db: &DB) -> Result<Option<ClusterId>, StoreError> {
    if let Some(v) = db.get_pinned_cf(cf(db, keys::CF_SM)?, keys::SM_CLUSTER_ID)? {
        return Ok(Some(crate::encoding::decode(&v)?));
    }
    match db.get_pinned_cf(cf(db, keys::CF_META)?, keys::META_CLUSTER_ID)? {
        Some(v) => Ok(Some(crate::encoding::decode(&v)?)),
        None => Ok(None),
    }
}

fn write_adopted(db: &DB, id: ClusterId) -> Result<(), StoreError> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    // Durable once this returns: a restart keeps the ID.
    db.put_cf_opt(cf(db, keys::CF_META)?, keys::META_CLUSTER_ID, crate::encoding::encode_sealed(&id), &opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ClusterId = ClusterId(0xa);
    const B: ClusterId = ClusterId(0xb);

    fn env(cluster: Option<ClusterId>, from: u64, to: u64, unborn: bool) -> Envelope {
        Envelope { cluster, from, from_addr: format!("10.0.0.{from}:7000"), to, unborn, legacy: false }
    }

    fn headers(e: &Envelope) -> http::HeaderMap {
        let mut md = MetadataMap::new();
        e.write(&mut md);
        md.into_headers()
    }

    #[test]
    fn the_rules() {
        let ok = |mine, e: Envelope| judge(2, "10.0.0.2:7000", mine, &e, "vote").is_ok();
        // Same cluster, or no ID on the receiver: admitted.
        assert!(ok(Some(A), env(Some(A), 1, 2, false)));
        assert!(ok(None, env(Some(A), 1, 2, false)));
        assert!(ok(None, env(None, 1, 2, false)));
        // Meant for another node: refused whatever the IDs.
        for (mine, theirs) in [(None, None), (Some(A), Some(A)), (None, Some(A))] {
            let r = judge(2, "10.0.0.2:7000", mine, &env(theirs, 1, 3, true), "vote").unwrap_err();
            assert!(
                matches!(&r, Refusal::Foreign(m) if m.contains("meant for node 3") && m.contains("node 1 at 10.0.0.1:7000")),
                "{r:?}"
            );
        }
        // Another cluster: refused, naming both IDs, both nodes, the
        // sender's address.
        let r = judge(2, "10.0.0.2:7000", Some(A), &env(Some(B), 1, 2, true), "append").unwrap_err();
        let Refusal::Foreign(m) = &r else { panic!("{r:?}") };
        for part in [
            "belongs to another cluster",
            &A.to_string(),
            &B.to_string(),
            "node 1 at 10.0.0.1:7000",
            "node 2 at 10.0.0.2:7000",
            "append",
        ] {
            assert!(m.contains(part), "{part:?} missing from {m:?}");
        }
        // A sender without an ID: admitted only if it holds nothing beyond
        // its bootstrap membership.
        assert!(ok(Some(A), env(None, 1, 2, true)));
        let r = judge(2, "10.0.0.2:7000", Some(A), &env(None, 1, 2, false), "vote").unwrap_err();
        assert!(matches!(r, Refusal::Unnamed(_)), "{r:?}");
    }

    #[test]
    fn an_envelope_round_trips_through_metadata() {
        for e in [env(Some(A), 1, 2, false), env(None, 3, 4, true)] {
            assert_eq!(Envelope::read(&headers(&e)), Ok(Some(e)));
        }
        assert_eq!(Envelope::read(&http::HeaderMap::new()), Ok(None));
        let mut h = headers(&env(Some(A), 1, 2, false));
        h.insert(CLUSTER_HEADER, http::HeaderValue::from_static("xyz"));
        assert!(Envelope::read(&h).is_err());
        let mut h = headers(&env(Some(A), 1, 2, false));
        h.insert(TO_HEADER, http::HeaderValue::from_static("-1"));
        assert!(Envelope::read(&h).is_err());
    }

    #[tokio::test]
    async fn a_stamp_writes_the_envelope() {
        let me = Identity::detached(2, "10.0.0.2:7000", None);
        for unborn in [false, true] {
            let mut md = MetadataMap::new();
            me.stamp(&mut md, 5, unborn);
            assert_eq!(Envelope::read(md.as_ref()), Ok(Some(me.envelope(5, unborn))));
        }
        assert!(me.adopt(A, 1).await.unwrap());
        let mut md = MetadataMap::new();
        me.stamp(&mut md, 5, false);
        assert_eq!(Envelope::read(md.as_ref()), Ok(Some(env(Some(A), 2, 5, false))));
        me.applied(B);
        let mut md = MetadataMap::new();
        me.stamp(&mut md, 5, false);
        assert_eq!(Envelope::read(md.as_ref()).unwrap().unwrap().cluster, Some(B));
    }

    #[test]
    fn a_refusal_is_failed_precondition_marked_and_remembered() {
        let me = Identity::detached(2, "10.0.0.2:7000", Some(A));
        let r = me.admit(&headers(&env(Some(B), 1, 2, false)), None, "append").unwrap_err();
        let status = tonic::Status::from(r);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(is_refusal(&status));
        assert!(me.peer_error(1).is_some_and(|m| m.contains(&B.to_string())));
        assert!(me.peer_error(3).is_none());
        // The sender side: a marked refusal is one; a plain
        // FAILED_PRECONDITION is not.
        let sender = Identity::detached(1, "10.0.0.1:7000", Some(B));
        assert!(sender.refused_by(2, "append", &status));
        assert!(sender.peer_error(2).is_some_and(|m| m.contains("belongs to another cluster")));
        assert!(!sender.refused_by(3, "append", &tonic::Status::failed_precondition("no")));
        // No envelope at level 1 (a rolling upgrade from 0.1.0): a legacy
        // peer, admitted.
        let legacy = Identity::detached(2, "10.0.0.2:7000", None);
        assert!(legacy.admit(&http::HeaderMap::new(), None, "vote").is_ok_and(|e| e.legacy && e.to == 2));
        // No envelope at all at level 2: malformed, not a refusal by cluster.
        me.versions().applied(LEVEL_IDENTITY);
        let status = tonic::Status::from(me.admit(&http::HeaderMap::new(), None, "vote").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(!is_refusal(&status));
        assert!(me.admit(&headers(&env(Some(A), 1, 2, false)), None, "append").is_ok());
    }

    #[tokio::test]
    async fn an_id_is_taken_once_and_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        let me = Identity::open(4, "a:1".into(), db.clone()).unwrap();
        assert_eq!(me.cluster_id(), None);
        assert!(!me.wait_named(Duration::from_millis(10)).await);
        assert!(me.adopt(A, 1).await.unwrap());
        assert!(!me.adopt(B, 1).await.unwrap(), "an ID is taken once");
        assert_eq!(me.cluster_id(), Some(A));
        assert!(me.wait_named(Duration::from_millis(10)).await);
        assert_eq!(Identity::open(4, "a:1".into(), db.clone()).unwrap().cluster_id(), Some(A), "kept on disk");
        // The state machine's ID is the authority.
        me.applied(B);
        assert_eq!(me.cluster_id(), Some(B));
    }

    #[test]
    fn refusal_lines_are_throttled_per_peer_but_all_remembered() {
        let me = Identity::detached(2, "x", Some(A));
        for i in 0..5 {
            me.note(1, Direction::In, "vote", &format!("refusal {i}"));
        }
        let peers = me.inner.peers.lock().unwrap();
        let p = peers.get(&1).unwrap();
        assert_eq!(p.last.as_ref().unwrap().1, "refusal 4");
        assert_eq!(p.logged.get(&Direction::In).unwrap().1, 4, "four lines left out within 10 s");
        drop(peers);
        assert_eq!(me.refused_counts(), BTreeMap::from([("vote".to_string(), 5)]));
    }
}
