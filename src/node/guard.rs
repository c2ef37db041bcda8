//! The one layer in front of every RPC that decides who may call it.
//!
//! Today it keeps the node-to-node methods (the Raft service, and the
//! clock exchange of the Cluster service) to authenticated peers when the
//! node serves TLS: the caller's certificate must chain to the peer CA and
//! name a node ([`crate::tls::Acceptor::peer_identity`]). Without TLS
//! (loopback, or `--insecure`) nothing is checked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::tls::Acceptor;

/// Paths only peers may call.
fn peer_only(path: &str) -> bool {
    path.starts_with("/drover.raft.v1.") || path == "/drover.v1.Cluster/Clock"
}

#[derive(Clone)]
pub struct GuardLayer {
    /// `None`: plaintext, nothing to check.
    pub tls: Option<Acceptor>,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, tls: self.tls.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    tls: Option<Acceptor>,
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(tls) = &self.tls {
            let path = req.uri().path();
            if peer_only(path) {
                let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
                let certs = info.and_then(|i| i.peer_certs());
                if let Err(why) = tls.peer_identity(certs.as_deref().map(Vec::as_slice)) {
                    let remote = info.and_then(|i| i.get_ref().remote_addr());
                    tracing::warn!(path, ?remote, reason = %why, "refused a peer-only call from a caller that is not a peer");
                    let status = if certs.is_none() {
                        tonic::Status::unauthenticated(format!("{path} is for cluster peers only: {why}"))
                    } else {
                        tonic::Status::permission_denied(format!("{path} is for cluster peers only: {why}"))
                    };
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::peer_only;

    #[test]
    fn raft_and_clock_are_peer_only_and_the_public_api_is_not() {
        assert!(peer_only("/drover.raft.v1.Raft/AppendEntries"));
        assert!(peer_only("/drover.v1.Cluster/Clock"));
        assert!(!peer_only("/drover.v1.Cluster/Status"));
        assert!(!peer_only("/drover.v1.Scheduler/Schedule"));
    }
}
