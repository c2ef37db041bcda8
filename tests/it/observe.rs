//! What operators see: `/metrics`, `/healthz` and `/readyz` on every node,
//! counts that agree across replicas, and gRPC server reflection.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::testkit::launcher::Spec;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

/// GET `path` from `addr`: (status code, body).
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The samples of a Prometheus text page: `name{labels}` -> value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the sample whose name is `name` and whose labels include
/// every one of `labels` (`k="v"`).
fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    s.iter()
        .find(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{"))) && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_serves_metrics_health_and_reflection() {
    let mut cluster_spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    cluster_spec.http_base_port = Some(0);
    let c = TestCluster::start_spec(cluster_spec).await;
    let client = c.client();
    let https: Vec<String> = c.nodes.iter().map(|n| n.http_addr.clone().expect("http address")).collect();
    for h in &https {
        assert_eq!(http_get(h, "/healthz").await.map(|r| r.0), Some(200), "{h}");
        wait_until(Duration::from_secs(10), "the node to be ready", || async {
            http_get(h, "/readyz").await.filter(|r| r.0 == 200)
        })
        .await;
        assert_eq!(http_get(h, "/nope").await.map(|r| r.0), Some(404));
    }

    register(&client, callback("m", 5_000)).await;
    let stop = CancellationToken::new();
    let w = Worker::builder(c.endpoints())
        .id("metrics-worker")
        .handle("m", 8, |_ctx: TaskContext| async { TaskResult::Success(Vec::new()) })
        .run(stop.clone());
    let worker = tokio::spawn(w);
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let spec = pb::TaskSpec { priority: i % 2, ..spec("m", b"") };
        ids.push(client.schedule(0, spec).await.expect("schedule").task_id);
    }
    for id in &ids {
        wait_state(&client, *id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    }
    converged_digests(&c).await;

    // Counted in apply: the same on every node.
    let mut leaders = 0;
    for h in &https {
        let (code, page) = http_get(h, "/metrics").await.expect("metrics");
        assert_eq!(code, 200);
        let s = samples(&page);
        assert_eq!(value(&s, "drover_tasks_scheduled_total", &["callback=\"m\""]), Some(20.0), "{h}:\n{page}");
        assert_eq!(
            value(&s, "drover_task_transitions_total", &["callback=\"m\"", "state=\"succeeded\""]),
            Some(20.0),
            "{h}"
        );
        let started: f64 = ["0", "1"]
            .iter()
            .filter_map(|p| {
                value(
                    &s,
                    "drover_task_schedule_to_start_seconds_count",
                    &["callback=\"m\"", &format!("priority=\"{p}\"")],
                )
            })
            .sum();
        assert_eq!(started, 20.0, "{h}");
        assert_eq!(value(&s, "drover_task_run_seconds_count", &["callback=\"m\""]), Some(20.0), "{h}");
        // 5 s is a bucket bound (ATF's "start within 5 seconds").
        assert!(value(&s, "drover_task_schedule_to_start_seconds_bucket", &["le=\"5\""]).is_some(), "{h}");
        assert_eq!(value(&s, "drover_raft_has_leader", &[]), Some(1.0), "{h}");
        assert!(value(&s, "drover_raft_term", &[]).is_some_and(|t| t >= 1.0));
        assert!(value(&s, "drover_raft_applied_index", &[]).is_some_and(|i| i > 20.0));
        assert_eq!(value(&s, "drover_queue_depth", &["callback=\"m\"", "state=\"ready\""]), Some(0.0), "{h}");
        assert!(value(&s, "drover_rocksdb_live_data_bytes", &[]).is_some(), "{h}");
        assert!(value(&s, "drover_process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0), "{h}");
        assert!(value(&s, "drover_raft_log_fsync_seconds_count", &[]).is_some_and(|v| v > 0.0), "{h}");
        if value(&s, "drover_raft_is_leader", &[]) == Some(1.0) {
            leaders += 1;
            assert_eq!(value(&s, "drover_workers_connected", &[]), Some(1.0), "{h}");
            assert_eq!(value(&s, "drover_worker_credits", &["callback=\"m\""]), Some(8.0), "{h}");
            assert!(
                value(
                    &s,
                    "drover_grpc_server_handling_seconds_count",
                    &["method=\"Scheduler/Schedule\"", "code=\"OK\""]
                )
                .is_some(),
                "{h}"
            );
            assert_eq!(value(&s, "drover_raft_replication_lag_entries", &[]), Some(0.0), "{h}");
        }
        assert!(!page.contains("task_id"), "never labelled by task id");
    }
    assert_eq!(leaders, 1);
    // The worker as the leader sees it, from any node: the RPC, the CLI
    // and the console page.
    let workers = client.list_workers().await.expect("list workers").workers;
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].worker_id, "metrics-worker");
    assert_eq!((workers[0].callbacks[0].callback.as_str(), workers[0].callbacks[0].credits), ("m", 8));
    let (ok, out, err) = cli(&endpoints(&c), &["cluster", "workers", "--json"]);
    assert!(ok && out.contains("\"metrics-worker\""), "{out}{err}");
    for h in &https {
        let (code, page) = http_get(h, "/workers").await.expect("workers page");
        assert_eq!(code, 200);
        assert!(page.contains("metrics-worker"), "{h}: {page}");
    }
    stop.cancel();
    let _ = worker.await;

    // gRPC reflection lists the services, as grpcurl would.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = client.channel(0).expect("channel");
    let mut r = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("reflection").into_inner();
    let reply = stream.message().await.expect("a reply").expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else { panic!("{reply:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["drover.v1.Scheduler", "drover.v1.Worker", "drover.v1.Cluster"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}
