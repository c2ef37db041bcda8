//! Revocation and expiry end what they cover, long-lived worker streams
//! included: a worker stream opened with a grant that is revoked (a token,
//! or a certificate subject) or that expires is closed with
//! `UNAUTHENTICATED`; a completion sent on it afterwards is refused; the
//! task it held goes back to its queue without an attempt counted once its
//! lease lapses, and runs on a worker whose credential holds.

use std::time::Duration;

use drover::client::Client;
use drover::pb;
use drover::pb::server_message::Msg as In;
use drover::pb::worker_message::Msg as Out;
use drover::tls::certs::write_bundle_from;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::auth::{create_token, settle};
use crate::harness::*;
use crate::testkit::Spec;

const HOUR: Duration = Duration::from_secs(3600);
/// The callback's lease: short, so that a revoked worker's task comes back
/// soon; heartbeats renew it while the credential holds.
const LEASE_MS: u64 = 2_000;

/// A raw worker stream: what the test sends, and what it receives.
struct RawWorker {
    out: mpsc::Sender<pb::WorkerMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
}

impl RawWorker {
    async fn connect(client: &Client, id: &str, callback: &str) -> Result<RawWorker, tonic::Status> {
        let (out, rx) = mpsc::channel(64);
        let hello = pb::Hello {
            worker_id: id.into(),
            callbacks: vec![pb::CallbackCredits { callback: callback.into(), concurrency: 4 }],
            running: vec![],
        };
        out.send(pb::WorkerMessage { msg: Some(Out::Hello(hello)) }).await.expect("queue hello");
        let inbound = pb::worker_client::WorkerClient::new(client.channel(0)?)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawWorker { out, inbound })
    }

    /// The next message, or the status that ended the stream.
    async fn next(&mut self) -> Result<Option<In>, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(20), self.inbound.message()).await {
            Ok(Ok(Some(m))) => Ok(m.msg),
            Ok(Ok(None)) => Err(tonic::Status::cancelled("the stream ended without a status")),
            Ok(Err(s)) => Err(s),
            Err(_) => panic!("no message on the worker stream within 20 s"),
        }
    }

    /// Wait for an assignment, answering nothing else.
    async fn assignment(&mut self) -> pb::Assignment {
        loop {
            match self.next().await.expect("the stream is open") {
                Some(In::Assignment(a)) => return a,
                Some(In::Redirect(r)) => panic!("redirected to {r:?}: connect to the leader"),
                _ => {}
            }
        }
    }

    async fn send(&self, msg: Out) {
        let _ = self.out.send(pb::WorkerMessage { msg: Some(msg) }).await;
    }
}

/// Heartbeat `task` on `out` every 300 ms (renewing its lease) until
/// the receiver goes away.
fn keep_renewing(out: mpsc::Sender<pb::WorkerMessage>, task: &pb::Assignment) {
    let r = pb::TaskRef { task_id: task.task_id, fencing_token: task.fencing_token };
    tokio::spawn(async move {
        for seq in 1.. {
            let hb = pb::Heartbeat { seq, tasks: vec![r] };
            if out.send(pb::WorkerMessage { msg: Some(Out::Heartbeat(hb)) }).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

/// A 3-node mutual-TLS cluster with auth on; the admin's client on the
/// leader, and the admin token.
async fn secured_cluster(dir: &std::path::Path) -> (TestCluster, Client, String) {
    let ca = drover::tls::certs::Ca::new("drover test CA").unwrap();
    let bundle = write_bundle_from(&ca, &dir.join("certs"), &[1, 2, 3], &[], HOUR).unwrap();
    let mut spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    spec.tls = Some(bundle);
    let c = TestCluster::start_spec(spec).await;
    let admin_token = create_token(&c.client(), "admin", &[], 0).await;
    let admin = c.client().with_token(&admin_token).unwrap();
    admin.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: true }).await.expect("enable auth");
    let settings = pb::CallbackSettings {
        name: "rev".into(),
        max_attempts: 5,
        lease_ms: LEASE_MS,
        timeout_ms: 60_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        ..Default::default()
    };
    admin.register_callback(settings).await.expect("register");
    (c, admin, admin_token)
}

/// The leader's client with `token` (or with the bundle's client
/// certificate only). (The admin asks who leads: with auth on, the test
/// harness's own client may not.)
async fn on_leader(c: &TestCluster, admin: &Client, token: Option<&str>) -> Client {
    let leader = admin.cluster_status().await.expect("cluster status").leader_id;
    let client = c.client_of(leader);
    match token {
        Some(t) => client.with_token(t).unwrap(),
        None => client,
    }
}

/// The whole story for one credential: a stream runs a task; the grant
/// `grant_id` ends (`end` revokes it, or it expires by itself); the stream
/// closes with UNAUTHENTICATED; a late completion is refused; the task
/// comes back without an attempt counted and runs on `good`.
async fn a_lapsed_grant_closes_its_stream(
    c: &TestCluster,
    admin: &Client,
    worker: Client,
    good: Client,
    end: impl std::future::Future<Output = ()>,
) {
    let mut w = RawWorker::connect(&worker, "w-lapsing", "rev").await.expect("connect with a valid grant");
    let task = admin.schedule(0, spec("rev", b"held")).await.expect("schedule").task_id;
    let a = w.assignment().await;
    assert_eq!((a.task_id, a.attempt), (task, 1));
    keep_renewing(w.out.clone(), &a);

    end.await;
    // The stream ends with UNAUTHENTICATED, however long it has been open.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Err(s) = w.next().await {
                return s;
            }
        }
    })
    .await
    .expect("the stream of a lapsed grant stays open");
    assert_eq!(closed.code(), Code::Unauthenticated, "{closed:?}");
    // A completion sent now is refused: the task does not succeed.
    w.send(Out::Completion(pb::Completion {
        task_id: a.task_id,
        fencing_token: a.fencing_token,
        outcome: Some(pb::completion::Outcome::Success(b"late".to_vec())),
    }))
    .await;
    // The same credential cannot open a new stream.
    let again = RawWorker::connect(&worker, "w-lapsing", "rev").await.err().map(|s| s.code());
    assert_eq!(again, Some(Code::Unauthenticated));

    // Once its lease lapses, the task is back in its queue, the attempt
    // not counted ...
    let back = wait_until(Duration::from_secs(15), "the held task to go back to its queue", || async {
        let t = admin.get_task(task, false, false).await.ok()?;
        (t.state != pb::TaskState::Running as i32).then_some(t)
    })
    .await;
    assert_ne!(back.state, pb::TaskState::Succeeded as i32, "a completion on a revoked stream was accepted: {back:?}");
    assert_eq!(back.attempts, 0, "released without an attempt counted: {back:?}");
    // ... and a worker whose credential holds runs it, as attempt 1.
    let mut g = RawWorker::connect(&good, "w-good", "rev").await.expect("connect with a valid grant");
    let again = g.assignment().await;
    assert_eq!((again.task_id, again.attempt), (task, 1));
    assert!(again.fencing_token > a.fencing_token, "a new lease, a new token");
    drop(g);
    let _ = c;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_closes_its_worker_stream_and_a_late_completion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, admin, admin_token) = secured_cluster(dir.path()).await;
    let worker_token = create_token(&admin, "worker", &[], 0).await;
    let good_token = create_token(&admin, "worker", &[], 0).await;
    settle(&c, &admin_token, 3).await;
    let worker = on_leader(&c, &admin, Some(&worker_token)).await;
    let good = on_leader(&c, &admin, Some(&good_token)).await;
    let id = drover::domain::auth::Grant::token_id(&drover::domain::auth::token_hash(&worker_token));
    let revoke = async {
        let r = admin.auth(0).unwrap().revoke(pb::RevokeRequest { id: id.clone() }).await.expect("revoke");
        assert!(r.get_ref().existed);
    };
    a_lapsed_grant_closes_its_stream(&c, &admin, worker, good, revoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_token_closes_its_worker_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (c, admin, admin_token) = secured_cluster(dir.path()).await;
    // Expires 6 s from now, in replicated time: nobody revokes it.
    let worker_token = create_token(&admin, "worker", &[], 6_000).await;
    let good_token = create_token(&admin, "worker", &[], 0).await;
    settle(&c, &admin_token, 3).await;
    let worker = on_leader(&c, &admin, Some(&worker_token)).await;
    let good = on_leader(&c, &admin, Some(&good_token)).await;
    a_lapsed_grant_closes_its_stream(&c, &admin, worker, good, async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_certificate_subject_closes_its_worker_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (c, admin, admin_token) = secured_cluster(dir.path()).await;
    // The bundle's client certificate names drover-client.
    let req = pb::GrantSubjectRequest { subject: "drover-client".into(), role: "worker".into(), ..Default::default() };
    admin.auth(0).unwrap().grant_subject(req).await.expect("grant the subject");
    let good_token = create_token(&admin, "worker", &[], 0).await;
    settle(&c, &admin_token, 3).await;
    let certified = on_leader(&c, &admin, None).await;
    let good = on_leader(&c, &admin, Some(&good_token)).await;
    let revoke = async {
        let req = pb::RevokeRequest { id: "c-drover-client".into() };
        let r = admin.auth(0).unwrap().revoke(req).await.expect("revoke the subject");
        assert!(r.get_ref().existed);
    };
    a_lapsed_grant_closes_its_stream(&c, &admin, certified, good, revoke).await;
}
