//! Authorization against a real TLS cluster with auth on: every role
//! against every kind of call, on the leader and through a follower (which
//! forwards the caller's identity); no token, a bad, revoked or expired
//! token; grants scoped to callbacks; certificate subjects; forged
//! forwarding headers; expired client certificates; the CLI's errors.

use std::time::Duration;

use drover::client::Client;
use drover::domain::auth::{new_token, token_hash};
use drover::pb;
use drover::tls::certs::{write_bundle_from, Ca, Usage};
use drover::tls::ClientTls;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::harness::*;
use crate::testkit::Spec;

const HOUR: Duration = Duration::from_secs(3600);

/// The role each call needs, least to most.
const ROLES: [&str; 5] = ["reader", "producer", "worker", "operator", "admin"];

pub async fn create_token(client: &Client, role: &str, callbacks: &[&str], expires_in_ms: u64) -> String {
    let token = new_token();
    let req = pb::CreateTokenRequest {
        token_sha256: token_hash(&token).to_vec(),
        role: role.into(),
        callbacks: callbacks.iter().map(|c| c.to_string()).collect(),
        expires_in_ms,
        note: format!("test {role}"),
    };
    client.auth(0).unwrap().create_token(req).await.expect("create token");
    token
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// One call of each kind, as `client` (one node, no failover): the code
/// it got. `task` exists; `victim` is a task the producer may cancel.
async fn call(client: &Client, what: &str, task: u64, victim: u64) -> Result<(), tonic::Status> {
    let mut s = client.scheduler(0)?;
    match what {
        "GetTask" => s.get_task(pb::GetTaskRequest { task_id: task, ..Default::default() }).await.map(drop),
        "ListCallbacks" => s.list_callbacks(pb::ListCallbacksRequest::default()).await.map(drop),
        "Status" => client.cluster(0)?.status(pb::ClusterStatusRequest {}).await.map(drop),
        "Schedule" => s
            .schedule(pb::ScheduleRequest {
                task: Some(spec("sms", b"x")),
                request_id: drover::client::new_request_id(),
            })
            .await
            .map(drop),
        "CancelTask" => s.cancel_task(pb::CancelTaskRequest { task_id: victim }).await.map(drop),
        "Connect" => {
            let (tx, out) = tokio::sync::mpsc::channel(2);
            let hello = pb::Hello {
                worker_id: "table".into(),
                callbacks: vec![pb::CallbackCredits { callback: "idle".into(), concurrency: 1 }],
                running: vec![],
            };
            let _ = tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Hello(hello)) }).await;
            let r = pb::worker_client::WorkerClient::new(client.channel(0)?).connect(ReceiverStream::new(out)).await;
            r.map(drop)
        }
        "OpenGate" => {
            s.open_gate(pb::OpenGateRequest { callback: "idle".into(), collection: String::new() }).await.map(drop)
        }
        "PurgeDeadLetters" => {
            let target = Some(pb::dead_letter_request::Target::Callback("idle".into()));
            s.purge_dead_letters(pb::DeadLetterRequest { target, ..Default::default() }).await.map(drop)
        }
        "ListGrants" => client.auth(0)?.list_grants(pb::ListGrantsRequest {}).await.map(drop),
        "Revoke" => client.auth(0)?.revoke(pb::RevokeRequest { id: "t-000000000000".into() }).await.map(drop),
        other => panic!("no call {other}"),
    }
}

/// (call, the least role that may make it).
const TABLE: [(&str, &str); 10] = [
    ("GetTask", "reader"),
    ("ListCallbacks", "reader"),
    ("Status", "reader"),
    ("Schedule", "producer"),
    ("CancelTask", "producer"),
    ("Connect", "worker"),
    ("OpenGate", "operator"),
    ("PurgeDeadLetters", "operator"),
    ("ListGrants", "admin"),
    ("Revoke", "admin"),
];

/// Wait until every node has auth on and holds `grants` grants (each node
/// decides on its own applied state).
pub async fn settle(c: &TestCluster, admin_token: &str, grants: usize) {
    for n in &c.nodes {
        let node = c.client_of(n.id).with_token(admin_token).unwrap();
        wait_until(Duration::from_secs(10), "every grant on every node", || async {
            let r = node.auth(0).ok()?.list_grants(pb::ListGrantsRequest {}).await.ok()?.into_inner();
            (r.enabled && r.grants.len() == grants).then_some(())
        })
        .await;
    }
}

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("a role")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_may_make_exactly_its_calls_on_every_node_and_strangers_none() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("drover test CA").unwrap();
    let bundle = write_bundle_from(&ca, &dir.path().join("certs"), &[1, 2, 3], &[], HOUR).unwrap();
    let mut cluster_spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    cluster_spec.tls = Some(bundle.clone());
    let c = TestCluster::start_spec(cluster_spec).await;
    let leader = c.leader().await;
    let follower = c.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    let anyone = c.client();

    // Auth off: anyone may create the first admin token; turning auth on
    // needs the caller to be that admin.
    let admin_token = create_token(&anyone, "admin", &[], 0).await;
    let e = anyone.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: true }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let admin = c.client().with_token(&admin_token).unwrap();
    let on = admin.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: true }).await.expect("enable");
    assert!(on.get_ref().enabled && on.get_ref().role == "admin", "{on:?}");

    let mut tokens = vec![];
    for role in ROLES {
        tokens.push((role, create_token(&admin, role, &[], 0).await));
    }
    // Every node has applied the switch and the grants before the table.
    settle(&c, &admin_token, ROLES.len() + 1).await;
    let task = admin.schedule(0, spec("sms", b"x")).await.unwrap().task_id;
    let victim = admin.schedule(0, spec("sms", b"cancel me")).await.unwrap().task_id;

    // Role x call, on the leader and through a follower.
    for node in [leader, follower] {
        for (role, token) in &tokens {
            let client = c.client_of(node).with_token(token).unwrap();
            for (what, least) in TABLE {
                let got = call(&client, what, task, victim).await;
                if rank(role) >= rank(least) {
                    let code = code(got);
                    assert!(
                        !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                        "node {node}: {role} was refused {what}: {code:?}"
                    );
                } else {
                    let e = got.expect_err(&format!("node {node}: {role} was allowed {what}"));
                    assert_eq!(e.code(), Code::PermissionDenied, "node {node}: {role} {what}: {e:?}");
                    assert!(e.message().contains(&format!("needs role {least}")), "{e:?}");
                }
            }
        }
        // No token, and a token nobody created: UNAUTHENTICATED for all.
        let stranger = c.client_of(node).with_token(&new_token()).unwrap();
        for (what, _) in TABLE {
            assert_eq!(code(call(&c.client_of(node), what, task, victim).await), Code::Unauthenticated, "{what}");
            assert_eq!(code(call(&stranger, what, task, victim).await), Code::Unauthenticated, "{what}");
        }
        let me = c.client_of(node).auth(0).unwrap().who_am_i(pb::WhoAmIRequest {}).await.expect("whoami");
        assert!(me.get_ref().enabled && me.get_ref().principal.is_empty(), "{me:?}");
    }

    // A grant scoped to callbacks reaches only those.
    let scoped = admin.clone().with_token(&create_token(&admin, "producer", &["email.*"], 0).await).unwrap();
    settle(&c, &admin_token, ROLES.len() + 2).await;
    let mail = scoped.schedule(0, spec("email.send", b"hi")).await.expect("scoped schedule").task_id;
    let e = scoped.schedule(0, spec("sms", b"no")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("email.*") && e.message().contains("sms"), "{e:?}");
    assert_eq!(scoped.get_task(task, false, false).await.unwrap_err().code(), Code::PermissionDenied);
    scoped.get_task(mail, false, false).await.expect("its own task");
    let mut s = scoped.scheduler(0).unwrap();
    let all = s.list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
    assert_eq!(all.code(), Code::PermissionDenied, "{all:?}");
    s.list_tasks(pb::ListTasksRequest { callback: "email.send".into(), ..Default::default() }).await.expect("list own");

    // A certificate subject's grant; a forged forwarding header from a
    // client (not a peer) gets nothing.
    let certified = c.client(); // presents the bundle's client pair, CN drover-client
    assert_eq!(code(call(&certified, "GetTask", task, victim).await), Code::Unauthenticated);
    let req = pb::GrantSubjectRequest { subject: "drover-client".into(), role: "reader".into(), ..Default::default() };
    admin.auth(0).unwrap().grant_subject(req).await.expect("grant subject");
    for node in [leader, follower] {
        let certified = c.client_of(node);
        wait_until(Duration::from_secs(10), "the subject grant on every node", || async {
            (code(call(&certified, "GetTask", task, victim).await) == Code::Ok).then_some(())
        })
        .await;
        assert_eq!(code(call(&certified, "Schedule", task, victim).await), Code::PermissionDenied);
        let target = Some(pb::dead_letter_request::Target::Callback("idle".into()));
        let mut forged = tonic::Request::new(pb::DeadLetterRequest { target, ..Default::default() });
        let admin_id = drover::domain::auth::Grant::token_id(&token_hash(&admin_token));
        forged.metadata_mut().insert("x-drover-on-behalf-of", admin_id.parse().unwrap());
        let e = certified.scheduler(0).unwrap().purge_dead_letters(forged).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "a forged on-behalf-of header was believed: {e:?}");
    }

    // An expired client certificate does not get past the handshake.
    let expired = ca.issue(&["drover-client".to_string()], Usage::Client, HOUR, true).unwrap();
    let (cert, key) = (dir.path().join("old.pem"), dir.path().join("old-key.pem"));
    std::fs::write(&cert, &expired.cert_pem).unwrap();
    std::fs::write(&key, &expired.key_pem).unwrap();
    let old = ClientTls { ca: Some(bundle.ca.clone()), cert: Some(cert), key: Some(key) };
    let mut stale = Client::new(vec![c.node(leader).addr.clone()]).with_tls(old.load().unwrap());
    stale.deadline = Duration::from_millis(500);
    assert!(stale.cluster_status().await.is_err(), "an expired client certificate was served");

    // Revoked and expired tokens stop working on every node.
    let (_, operator_token) = &tokens[3];
    let ids = admin.auth(0).unwrap().list_grants(pb::ListGrantsRequest {}).await.unwrap().into_inner();
    let operator_id = drover::domain::auth::Grant::token_id(&token_hash(operator_token));
    assert!(ids.grants.iter().any(|g| g.id == operator_id && g.role == "operator"), "{ids:?}");
    assert!(!format!("{ids:?}").contains(operator_token.as_str()), "a token was stored or shown");
    admin.auth(0).unwrap().revoke(pb::RevokeRequest { id: operator_id }).await.expect("revoke");
    let brief = create_token(&admin, "reader", &[], 1_500).await;
    for node in [leader, follower] {
        let revoked = c.client_of(node).with_token(operator_token).unwrap();
        let short = c.client_of(node).with_token(&brief).unwrap();
        wait_until(Duration::from_secs(20), "revoked and expired tokens refused", || async {
            let a = code(call(&revoked, "OpenGate", task, victim).await) == Code::Unauthenticated;
            let b = code(call(&short, "GetTask", task, victim).await) == Code::Unauthenticated;
            (a && b).then_some(())
        })
        .await;
    }

    // The CLI names the status, so a script can tell the two apart.
    let ep = endpoints(&c);
    let tls = bundle.client_tls();
    let (ca_s, cert_s, key_s) = (
        tls.ca.unwrap().display().to_string(),
        tls.cert.unwrap().display().to_string(),
        tls.key.unwrap().display().to_string(),
    );
    let base = ["--ca", ca_s.as_str(), "--cert", cert_s.as_str(), "--cert-key", key_s.as_str()];
    let (_, reader_token) = &tokens[0];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&ep, &a)
    };
    let (ok, _, err) = run(with(&["task", "schedule", "sms", "--token", "drover_nope"]));
    assert!(!ok && err.contains("not authenticated (UNAUTHENTICATED)"), "{err}");
    let (ok, _, err) = run(with(&["task", "schedule", "sms", "--token", reader_token]));
    assert!(!ok && err.contains("refused (PERMISSION_DENIED)") && err.contains("needs role producer"), "{err}");
    let (ok, out, err) = run(with(&["auth", "whoami", "--json", "--token", reader_token]));
    assert!(ok && out.contains("\"role\":\"reader\"") && out.contains("\"enabled\":true"), "{out}{err}");
    let (ok, out, err) = run(with(&["auth", "token", "create", "--role", "worker", "--token", &admin_token]));
    assert!(ok && out.trim().starts_with("drover_") && err.contains("shown only this once"), "{out}{err}");

    // Turning auth off opens the cluster again.
    admin.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: false }).await.expect("disable");
    wait_until(Duration::from_secs(10), "auth off on every node", || async {
        for node in [leader, follower] {
            if code(call(&c.client_of(node), "ListCallbacks", task, victim).await) != Code::Ok {
                return None;
            }
        }
        Some(())
    })
    .await;

    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<std::collections::HashSet<_>>().len(), 1, "{digests:?}");
}
