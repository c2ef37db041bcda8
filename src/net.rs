//! Long-lived gRPC channels to other nodes, one per address, shared by Raft
//! replication and by request forwarding. A channel reconnects by itself;
//! nothing here opens a connection per RPC.
//!
//! Also how a failed call is classified ([`classify`]): whether it applied
//! nothing, may have been applied, or failed for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Metadata key naming the leader (`ID=HOST:PORT`): on `UNAVAILABLE` from
/// a follower, and on replies a follower forwarded.
pub const LEADER_HINT: &str = "x-drover-leader";
/// Metadata key carrying a suggested retry delay in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Read the leader hint from response or status metadata.
pub fn leader_hint_in(md: &tonic::metadata::MetadataMap) -> Option<(u64, String)> {
    let v = md.get(LEADER_HINT)?.to_str().ok()?;
    let (id, addr) = v.split_once('=')?;
    Some((id.parse().ok()?, addr.to_string()))
}

/// Exponential backoff between retries: 50 ms, doubling, at most 1 s. The
/// one retry pace of the client, the worker SDK's reconnects and the
/// server's forwarding.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, next: first, max }
    }

    /// The delay before the next attempt (and double the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Sleep for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Start again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Largest gRPC message drover sends or accepts (a full `ScheduleBatch`, a
/// Raft append of large entries).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A client's bearer token, added to every call as `authorization: Bearer
/// <token>` (nothing without a token).
#[derive(Clone, Default, Debug)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token must be printable ASCII".to_string()),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry a [`Bearer`] token.
pub type AuthedChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// How a pool turns an endpoint into a (lazily connecting) channel. In
/// production there is none: `Endpoint::connect_lazy`, over TCP. The
/// deterministic simulation (`tests/sim/`) dials its simulated sockets
/// through one (`Endpoint::connect_with_connector_lazy`).
pub type Dialer = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

#[derive(Clone, Default)]
pub struct ChannelPool {
    /// Short critical sections only (lookup or insert), never held across
    /// an `.await`, hence a std mutex.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// How channels are secured; `None`: plaintext.
    tls: Option<ClientTlsConfig>,
    /// How channels connect; `None`: over TCP.
    dialer: Option<Dialer>,
}

impl ChannelPool {
    /// A pool whose channels use TLS (`https`), as `tls` says.
    pub fn with_tls(tls: Option<ClientTlsConfig>) -> ChannelPool {
        ChannelPool { channels: Arc::default(), tls, dialer: None }
    }

    /// This pool, connecting through `dialer` (a simulated network).
    pub fn with_dialer(mut self, dialer: Option<Dialer>) -> ChannelPool {
        self.dialer = dialer;
        self
    }

    /// The dialer of this pool's channels, if not TCP.
    pub fn dialer(&self) -> Option<Dialer> {
        self.dialer.clone()
    }

    /// The channel to `addr` (`host:port`), created lazily on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = self.endpoint(addr)?;
        let ch = match &self.dialer {
            Some(dial) => dial(endpoint),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// An endpoint for `addr` secured like this pool's channels (for a
    /// one-off connection with its own timeouts).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        endpoint(addr, self.tls.clone())
    }
}

/// A client endpoint with drover's timeouts and keepalives; with `tls`,
/// over TLS (an `http://` address becomes `https://`).
pub fn endpoint(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, tonic::transport::Error> {
    let bare = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")).unwrap_or(addr);
    let uri = match (&tls, addr.starts_with("https://")) {
        (Some(_), _) | (None, true) => format!("https://{bare}"),
        (None, false) => format!("http://{bare}"),
    };
    let endpoint = Endpoint::from_shared(uri)?;
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls)?,
        None => endpoint,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        // A peer that stops answering pings (partitioned, frozen) is dropped
        // within ~2.5 s; requests then fail over instead of hanging.
        .keep_alive_timeout(Duration::from_millis(1500))
        .keep_alive_while_idle(true))
}

/// Where a failed call failed, which decides whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Certainly not applied: safe to retry anything.
    NotApplied,
    /// The request may have been applied: retry only idempotent calls.
    OutcomeUnknown,
    /// Retrying will not help (a bad request, a missing task, ...).
    Final,
}

/// Metadata key set on statuses generated on this side for a request whose
/// outcome is unknown (an attempt that timed out).
const LOCAL_UNKNOWN: &str = "x-drover-outcome-unknown";

/// Mark a locally generated status as "outcome unknown".
pub fn mark_outcome_unknown(status: &mut Status) {
    status.metadata_mut().insert(LOCAL_UNKNOWN, tonic::metadata::MetadataValue::from_static("1"));
}

/// Classify a failed call by its status code and by whether the failure
/// came from a drover node or from the transport on this side.
pub fn classify(status: &Status) -> Failure {
    if status.metadata().contains_key(LOCAL_UNKNOWN) {
        return Failure::OutcomeUnknown;
    }
    // Statuses built from a local transport error carry their source; those
    // read off the wire from a node do not.
    if let Some(source) = std::error::Error::source(status) {
        return if is_connect_failure(source) { Failure::NotApplied } else { Failure::OutcomeUnknown };
    }
    match status.code() {
        // A drover node answers UNAVAILABLE only when nothing was written.
        Code::Unavailable => Failure::NotApplied,
        Code::DeadlineExceeded | Code::Aborted | Code::Unknown | Code::Cancelled => Failure::OutcomeUnknown,
        _ => Failure::Final,
    }
}

/// Whether a transport error happened before any request could leave: the
/// connection was refused, the address did not resolve or is unreachable,
/// or the connect timed out.
fn is_connect_failure(mut e: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable) {
                return true;
            }
        }
        // tonic wraps every failure to establish a connection in this type.
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_from_a_node_are_classified_by_code() {
        assert_eq!(classify(&Status::unavailable("no leader")), Failure::NotApplied);
        for s in [Status::deadline_exceeded("t"), Status::aborted("a"), Status::unknown("u"), Status::cancelled("c")] {
            assert_eq!(classify(&s), Failure::OutcomeUnknown, "{s:?}");
        }
        for s in [Status::invalid_argument("x"), Status::not_found("x"), Status::internal("x")] {
            assert_eq!(classify(&s), Failure::Final, "{s:?}");
        }
    }

    #[test]
    fn transport_failures_are_classified_by_where_they_happened() {
        // Could not connect: nothing left this process.
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let s = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(classify(&s), Failure::NotApplied);
        // The connection broke after the request may have left: the same
        // UNAVAILABLE code, but the outcome is unknown.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let s = Status::from_error(Box::new(reset));
        assert_eq!(classify(&s), Failure::OutcomeUnknown, "{s:?}");
        // A local attempt timeout.
        let mut s = Status::deadline_exceeded("attempt timed out");
        mark_outcome_unknown(&mut s);
        assert_eq!(classify(&s), Failure::OutcomeUnknown);
        let mut s = Status::unavailable("timed out");
        mark_outcome_unknown(&mut s);
        assert_eq!(classify(&s), Failure::OutcomeUnknown, "the mark wins over the code");
    }
}
