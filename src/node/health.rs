//! The standard gRPC health service: SERVING while this node knows a
//! leader (it can take writes, directly or by forwarding).

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::consensus::LeadershipWatch;

pub async fn report(mut leadership: LeadershipWatch, reporter: HealthReporter, stop: CancellationToken) {
    loop {
        let serving = leadership.current().leader.is_some();
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status("", status).await;
        reporter.set_service_status("drover.v1.Scheduler", status).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            alive = leadership.changed() => if !alive { break },
        }
    }
}
