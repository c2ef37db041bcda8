//! What the node counts for operators outside the layers it composes: gRPC
//! handling time per method and status code (a tower layer on the server),
//! and leader changes seen.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::consensus::LeadershipWatch;
use crate::metrics as m;

/// Records [`m::GRPC_HANDLING`] for every request.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// A gRPC status code's name, from the `grpc-status` header of a response
/// (absent until the trailers when the call succeeds).
fn code_name(value: Option<&http::HeaderValue>) -> &'static str {
    let code = value.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    match tonic::Code::from(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // "/drover.v1.Scheduler/Schedule" -> "Scheduler/Schedule".
        let path = req.uri().path();
        let method = path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
        let method = method.rsplit_once('.').map_or(method.clone(), |(_, m)| m.to_string());
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            let code = match &response {
                Ok(r) => code_name(r.headers().get("grpc-status")),
                Err(_) => "UNAVAILABLE",
            };
            metrics::histogram!(m::GRPC_HANDLING, "method" => method, "code" => code)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}

/// Count every change of leader this node sees.
pub async fn count_leader_changes(mut watch: LeadershipWatch, shutdown: CancellationToken) {
    let mut leader = watch.current().leader.map(|p| p.id);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            alive = watch.changed() => {
                if !alive {
                    return;
                }
            }
        }
        let now = watch.current().leader.map(|p| p.id);
        if now.is_some() && now != leader {
            metrics::counter!(m::RAFT_LEADER_CHANGES).increment(1);
        }
        leader = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named_from_the_header() {
        assert_eq!(code_name(None), "OK");
        assert_eq!(code_name(Some(&http::HeaderValue::from_static("5"))), "NOT_FOUND");
        assert_eq!(code_name(Some(&http::HeaderValue::from_static("14"))), "UNAVAILABLE");
        assert_eq!(code_name(Some(&http::HeaderValue::from_static("junk"))), "OK");
    }
}
