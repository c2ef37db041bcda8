//! The standard gRPC health service: SERVING while this node knows a
//! leader (it can take writes, directly or by forwarding); NOT_SERVING
//! without one, once its storage has failed, and while it stops.

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::consensus::LeadershipWatch;

pub async fn report(mut leadership: LeadershipWatch, reporter: HealthReporter, stop: CancellationToken) {
    loop {
        // A node whose storage failed knows no leader: NOT_SERVING at once.
        let serving = leadership.current().leader.is_some();
        set(&reporter, if serving { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            alive = leadership.changed() => if !alive { break },
        }
    }
    // Stopping (or Raft gone): nothing here serves any more.
    set(&reporter, ServingStatus::NotServing).await;
}

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status("drover.v1.Scheduler", status).await;
}
