//! Run a request on the leader: locally if this node leads, else forward
//! the original request over the node's long-lived channel to the leader.
//! The client sees no difference. A forwarded request carries this node's
//! cluster envelope (cluster ID, this node's id, the leader's id): a node
//! of another cluster on the leader's address refuses it.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;

use super::ApiError;
use crate::consensus::{Consensus, Peer, Route};
use crate::net::{classify, ChannelPool, Failure};
use crate::raft::identity::Envelope;

/// Metadata key set on forwarded requests: a forwarded request is never
/// forwarded again (no loops); the receiver answers `UNAVAILABLE` with a
/// leader hint instead, and the forwarding node retries.
pub const FORWARDED: &str = "x-drover-forwarded";

/// What forwarding needs: who leads, and channels to reach it.
#[derive(Clone)]
pub struct Forwarder {
    pub consensus: Consensus,
    pub pool: ChannelPool,
}

pub fn is_forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// How a request forwarded to one leader is marked: as forwarded (never
/// forwarded again), with this node's cluster envelope for that leader.
#[derive(Clone)]
pub struct Forwarding {
    envelope: Envelope,
}

impl Forwarding {
    pub fn mark<T>(&self, mut req: tonic::Request<T>) -> tonic::Request<T> {
        if let Ok(v) = self.envelope.from.to_string().parse() {
            req.metadata_mut().insert(FORWARDED, v);
        }
        self.envelope.write(req.metadata_mut());
        req
    }
}

/// Wrap a reply; a follower that forwarded names the leader in
/// `x-drover-leader`, so clients can send the next write there directly.
pub fn with_leader_hint<T>(consensus: &Consensus, reply: T) -> tonic::Response<T> {
    let mut response = tonic::Response::new(reply);
    if let Some(leader) = consensus.leadership().leader.filter(|p| p.id != consensus.id()) {
        if let Ok(v) = format!("{}={}", leader.id, leader.addr).parse() {
            response.metadata_mut().insert(crate::net::LEADER_HINT, v);
        }
    }
    response
}

/// Run a unary RPC on the leader: `$local` here if this node leads, else
/// the same request forwarded with `$client(channel).$method(..)`. The
/// reply names the leader (see [`with_leader_hint`]).
///
/// `membership` before the arguments marks a membership change: forwarded,
/// it is waited on for [`crate::config::Timing::membership_forward_timeout`]
/// instead of the forward timeout.
macro_rules! leader_rpc {
    (membership $self:ident, $request:ident, $client:expr, $method:ident, |$req:ident| $local:expr) => {{
        let within = $self.forward.consensus.timing().membership_forward_timeout();
        $crate::api::forward::leader_rpc!(@within within, $self, $request, $client, $method, |$req| $local)
    }};
    ($self:ident, $request:ident, $client:expr, $method:ident, |$req:ident| $local:expr) => {{
        let within = $self.forward.consensus.timing().forward_timeout;
        $crate::api::forward::leader_rpc!(@within within, $self, $request, $client, $method, |$req| $local)
    }};
    (@within $within:ident, $self:ident, $request:ident, $client:expr, $method:ident, |$req:ident| $local:expr) => {{
        let forwarded = $crate::api::forward::is_forwarded(&$request);
        let identity = $crate::api::access::Identity::of(&$request);
        let $req = $request.into_inner();
        let reply = $self
            .forward
            .on_leader(
                forwarded,
                $within,
                || async { $local },
                |ch, forwarding| {
                    let r = $req.clone();
                    let identity = identity.clone();
                    async move {
                        let r = identity.attach(forwarding.mark(tonic::Request::new(r)));
                        Ok($client(ch).$method(r).await?.into_inner())
                    }
                },
            )
            .await?;
        Ok($crate::api::forward::with_leader_hint(&$self.forward.consensus, reply))
    }};
}
pub(crate) use leader_rpc;

impl Forwarder {
    /// Run `local` if this node leads, else `remote` against the leader's
    /// channel, waiting at most `forward_timeout` for its answer. Retries
    /// across leader changes until `leader_wait` runs out.
    pub async fn on_leader<T, L, LF, R, RF>(
        &self,
        forwarded: bool,
        forward_timeout: Duration,
        local: L,
        remote: R,
    ) -> Result<T, tonic::Status>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<T, ApiError>>,
        R: Fn(Channel, Forwarding) -> RF,
        RF: Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.consensus.timing().leader_wait;
        // The leader moved or is being elected: look again soon.
        let mut backoff = crate::net::Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
        loop {
            let retry = match self.consensus.route().await.map_err(ApiError::from)? {
                Route::Local => match local().await {
                    Err(ApiError::Unavailable { leader: Some(_), .. })
                        if !forwarded && tokio::time::Instant::now() < deadline =>
                    {
                        true
                    }
                    other => return other.map_err(Into::into),
                },
                Route::Remote(leader) if forwarded => {
                    return Err(ApiError::Unavailable {
                        message: format!(
                            "node {} is not the leader; node {} at {} is",
                            self.consensus.id(),
                            leader.id,
                            leader.addr
                        ),
                        leader: Some(leader),
                        retry_after_ms: 0,
                    }
                    .into());
                }
                Route::Remote(leader) => {
                    let channel = self
                        .pool
                        .get(&leader.addr)
                        .map_err(|e| ApiError::Internal(format!("leader address {}: {e}", leader.addr)))?;
                    let forwarding = Forwarding {
                        envelope: self.consensus.identity().envelope(leader.id, self.consensus.holds_nothing()),
                    };
                    let answer = match tokio::time::timeout(forward_timeout, remote(channel, forwarding)).await {
                        Ok(answer) => answer,
                        // The request may have reached the leader.
                        Err(_) => {
                            return Err(ApiError::Timeout(format!(
                                "leader node {} at {} did not answer within {:?}; the request may or may not have \
                                 been applied: retry (writes: with the same idempotency key or request id)",
                                leader.id, leader.addr, forward_timeout
                            ))
                            .into())
                        }
                    };
                    match answer {
                        Ok(v) => return Ok(v),
                        Err(s) if self.consensus.identity().refused_by(leader.id, "forwarded request", &s) => {
                            return Err(s)
                        }
                        Err(s) => match forwarded_failure(&leader, s, tokio::time::Instant::now() < deadline) {
                            Ok(()) => true,
                            Err(s) => return Err(s),
                        },
                    }
                }
            };
            if retry {
                backoff.wait().await;
            }
        }
    }
}

/// What a failed forward means for the caller: `Ok` to look for the
/// leader again (nothing was applied and there is time), else the status
/// to answer.
fn forwarded_failure(leader: &Peer, s: tonic::Status, time_left: bool) -> Result<(), tonic::Status> {
    let local = std::error::Error::source(&s).is_some();
    match classify(&s) {
        // Nothing was applied: the leader moved, is electing, or could not
        // be connected to. Find it again.
        Failure::NotApplied if time_left => Ok(()),
        // A drover node's own UNAVAILABLE carries its hints: pass it on.
        Failure::NotApplied if !local => Err(s),
        Failure::NotApplied => Err(ApiError::Unavailable {
            message: format!(
                "leader node {} at {} is unreachable ({}); nothing was written; retry shortly",
                leader.id,
                leader.addr,
                s.message()
            ),
            leader: None,
            retry_after_ms: 500,
        }
        .into()),
        // The connection broke with the request in flight: the leader may
        // have applied it.
        Failure::OutcomeUnknown if local => Err(ApiError::OutcomeUnknown(format!(
            "the connection to leader node {} at {} broke while the request was in flight ({}); it may or may not \
             have been applied: retry (writes: with the same idempotency key or request id)",
            leader.id,
            leader.addr,
            s.message()
        ))
        .into()),
        _ => Err(s),
    }
}
