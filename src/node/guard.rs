//! The one layer in front of every RPC that decides who may call it.
//!
//! - Node-to-node methods (the Raft service, and the clock exchange and
//!   the add-node handshake of the Cluster service) are kept to authenticated peers when the node serves
//!   TLS: the caller's certificate must chain to the peer CA and name a
//!   node ([`crate::tls::Acceptor::peer_identity`]).
//! - Every other method: the caller's credentials (a bearer token, a
//!   client certificate, or a peer acting for one) name a principal
//!   ([`access::authenticate`]), which must have the role the method needs
//!   ([`access::need`]) when auth is on. The principal goes into the
//!   request's extensions, for the handlers' callback scope checks.
//!
//! - A request another node forwarded carries that node's cluster envelope,
//!   judged like a Raft message ([`crate::raft::identity`]): one of another
//!   cluster, or meant for another node, gets `FAILED_PRECONDITION`.
//!
//! Refusals are `UNAUTHENTICATED` (no or unknown credentials) or
//! `PERMISSION_DENIED` (naming the role needed), logged with the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::api::access::{self, Credentials, Need};
use crate::consensus::clock::ProposerClock;
use crate::store::{index, SharedIndex};
use crate::tls::Acceptor;

#[derive(Clone)]
pub struct GuardLayer {
    /// `None`: plaintext, no peer can prove who it is.
    pub tls: Option<Acceptor>,
    /// Grants, and whether they are enforced.
    pub index: SharedIndex,
    /// Replicated time, for grants' expiry.
    pub clock: ProposerClock,
    /// Refusal log lines, throttled.
    pub throttle: Arc<Throttle>,
    /// Judges the envelope of a forwarded request.
    pub identity: crate::raft::identity::Identity,
}

/// Refusals are logged at most [`Throttle::PER_SECOND`] a second, so that a
/// client retrying a bad token cannot flood the log; each line says how
/// many were left out before it. (Every refusal is still counted in
/// `drover_grpc_server_handling_seconds{code}`.)
pub struct Throttle {
    start: Instant,
    /// (second since start, lines logged in it, lines left out since the
    /// last one logged).
    state: Mutex<(u64, u32, u64)>,
}

impl Throttle {
    pub const PER_SECOND: u32 = 10;

    pub fn new() -> Throttle {
        Throttle { start: Instant::now(), state: Mutex::new((0, 0, 0)) }
    }

    /// Whether to log a refusal now; if so, how many were left out before.
    fn admit(&self) -> Option<u64> {
        self.admit_at(self.start.elapsed().as_secs())
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 != second {
            (s.0, s.1) = (second, 0);
        }
        if s.1 < Self::PER_SECOND {
            s.1 += 1;
            Some(std::mem::take(&mut s.2))
        } else {
            s.2 += 1;
            None
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl GuardLayer {
    /// Decide on one call: `Err` is the refusal to send.
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), tonic::Status> {
        let path = req.uri().path().to_string();
        let need = access::need(&path);
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let remote = info
            .and_then(|i| i.get_ref().remote_addr())
            .or_else(|| req.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr));
        if req.headers().contains_key(crate::api::forward::FORWARDED) {
            self.admit_forwarded(req.headers(), remote)?;
        }
        let certs = info.and_then(|i| i.peer_certs());
        let certs = certs.as_deref().map(Vec::as_slice);
        let peer = || match &self.tls {
            Some(tls) => tls.peer_identity(certs),
            None => Err("plaintext".to_string()),
        };
        if need == Need::Peer {
            if let (Some(_), Err(why)) = (&self.tls, peer()) {
                if let Some(suppressed) = self.throttle.admit() {
                    tracing::warn!(path, ?remote, reason = %why, suppressed, "refused a peer-only call from a caller that is not a peer");
                }
                let message = format!("{path} is for cluster peers only: {why}");
                return Err(match certs {
                    None => tonic::Status::unauthenticated(message),
                    Some(_) => tonic::Status::permission_denied(message),
                });
            }
            return Ok(());
        }
        let mut creds = Credentials::from_metadata(req.headers());
        if creds.authorization.is_none() {
            // Without a token, the certificate says who calls: a peer, or
            // a client by its subject.
            creds.peer = peer().ok();
            if creds.peer.is_none() {
                creds.subject = crate::tls::client_subject(certs);
            }
        }
        let now = self.clock.stamp();
        let decided = {
            let index = index::lock(&self.index);
            access::authenticate(index.auth(), &creds, now)
        };
        if need == Need::Nothing && creds.authorization.is_none() && decided.is_err() {
            // Health checks and "who am I" answer the anonymous too (a
            // certificate with no grant included); a bad token is refused.
            return Ok(());
        }
        let principal = decided.and_then(|p| access::authorize(&p, need, &path).map(|()| p)).map_err(|e| {
            if let Some(suppressed) = self.throttle.admit() {
                tracing::warn!(path, ?remote, reason = %e, suppressed, "refused a call");
            }
            tonic::Status::from(e)
        })?;
        req.extensions_mut().insert(principal);
        Ok(())
    }
}

impl GuardLayer {
    /// A forwarded request must come from a node of this cluster, and be
    /// meant for this node. A forwarder that holds data but has not learned
    /// the cluster's ID yet (a leader's heartbeat teaches it within
    /// moments) gets `UNAVAILABLE`, which it retries.
    fn admit_forwarded(
        &self,
        headers: &http::HeaderMap,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<(), tonic::Status> {
        use crate::raft::identity::Refusal;
        match self.identity.admit(headers, remote, "forwarded request") {
            Ok(_) => Ok(()),
            Err(Refusal::Unnamed(m)) => Err(tonic::Status::unavailable(m)),
            Err(r) => Err(r.into()),
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.layer.check(&mut req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn refusal_lines_are_throttled_and_say_how_many_were_left_out() {
        let t = Throttle::new();
        for _ in 0..Throttle::PER_SECOND {
            assert_eq!(t.admit_at(5), Some(0));
        }
        assert_eq!(t.admit_at(5), None);
        assert_eq!(t.admit_at(5), None);
        assert_eq!(t.admit_at(6), Some(2), "the next second's first line counts the ones left out");
        assert_eq!(t.admit_at(6), Some(0));
    }
}
