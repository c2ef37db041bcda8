//! TLS: a cluster whose nodes serve TLS and prove to each other who they
//! are. Clients and workers connect with the CA (and a client pair); a
//! plaintext client, a client trusting another CA, and a certificate from
//! another CA are refused; the node-to-node methods refuse a caller whose
//! certificate names no node; certificates reload without a restart, under
//! load, and nothing acknowledged is lost.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drover::pb;
use drover::pb::cluster_client::ClusterClient;
use drover::pb::raft::raft_client::RaftClient;
use drover::tls::certs::{write_bundle, write_bundle_from, Bundle, Ca};
use drover::tls::ClientTls;

use crate::harness::*;
use crate::testkit::Spec;

const HOUR: Duration = Duration::from_secs(3600);

async fn tls_cluster(bundle: &Bundle) -> TestCluster {
    let mut spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    spec.tls = Some(bundle.clone());
    TestCluster::start_spec(spec).await
}

/// A channel to `addr` over TLS as `tls` says (no retries, no failover).
async fn channel(addr: &str, tls: &ClientTls) -> Result<tonic::transport::Channel, String> {
    let tls = tls.load().map_err(|e| e.to_string())?;
    drover::net::endpoint(addr, Some(tls)).map_err(|e| e.to_string())?.connect().await.map_err(|e| format!("{e:?}"))
}

/// Call Raft's Vote on `addr` with an empty message, as `tls` says: the
/// status code the node answered, or `Err` if the connection failed (a
/// certificate refused in the handshake; with TLS 1.3 the client learns it
/// on its first request).
async fn raft_vote(addr: &str, tls: &ClientTls) -> Result<tonic::Code, String> {
    let ch = channel(addr, tls).await?;
    match RaftClient::new(ch).vote(pb::raft::RaftMessage::default()).await {
        Ok(_) => Ok(tonic::Code::Ok),
        Err(s) => match std::error::Error::source(&s) {
            Some(transport) => Err(format!("{transport:?}")),
            None => Ok(s.code()),
        },
    }
}

fn tls_args(tls: &ClientTls) -> Vec<String> {
    let mut a = Vec::new();
    for (flag, path) in [("--ca", &tls.ca), ("--cert", &tls.cert), ("--cert-key", &tls.key)] {
        if let Some(p) = path {
            a.extend([flag.to_string(), p.display().to_string()]);
        }
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_its_clients_and_refuses_plaintext_strangers_and_false_peers() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(&dir.path().join("ours"), &[1, 2, 3], &[], HOUR).unwrap();
    let c = tls_cluster(&bundle).await;
    let ep = endpoints(&c);
    let addr = c.nodes[0].addr.clone();

    // The library client, the CLI and a worker process, over TLS: a task
    // scheduled through a follower runs and succeeds (so replication and
    // forwarding between the nodes work over mutual TLS).
    let client = c.client();
    let id = client.schedule(0, spec("tls", b"hi")).await.expect("schedule over TLS").task_id;
    let args = tls_args(&bundle.client_tls());
    let mut worker_args: Vec<&str> = args.iter().map(String::as_str).collect();
    worker_args.extend(["--callback", "tls", "--id", "w", "--builtin", "noop"]);
    let _w = WorkerProc::start(&ep, dir.path().join("w.log"), &worker_args);
    wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    let mut get: Vec<&str> = vec!["task", "get"];
    let id_s = id.to_string();
    get.push(&id_s);
    get.extend(args.iter().map(String::as_str));
    let (ok, out, err) = cli(&ep, &get);
    assert!(ok && out.contains("succeeded"), "{out}{err}");
    // The TLS key flag does not collide with `task schedule --key`.
    let mut keyed: Vec<&str> = vec!["task", "schedule", "tls", "--key", "k1"];
    keyed.extend(args.iter().map(String::as_str));
    let (ok, out, err) = cli(&ep, &keyed);
    assert!(ok && out.trim().parse::<u64>().is_ok(), "{out}{err}");
    let mut status: Vec<&str> = vec!["cluster", "status", "--json"];
    status.extend(args.iter().map(String::as_str));
    let (ok, out, err) = cli(&ep, &status);
    assert!(ok && out.matches("\"tls\":true").count() == 3 && !out.contains("\"insecure_exposed\":true"), "{out}{err}");

    // Plaintext, and a client that trusts another CA: refused.
    let mut plain = drover::client::Client::new(vec![addr.clone()]);
    plain.deadline = Duration::from_millis(500);
    assert!(plain.cluster_status().await.is_err(), "a plaintext client was served");
    let (ok, _, err) = cli(&addr, &["task", "get", &id_s]);
    assert!(!ok && !err.is_empty(), "the CLI without --ca was served");
    let other = write_bundle(&dir.path().join("other"), &[1, 2], &[], HOUR).unwrap();
    let e = channel(&addr, &other.client_tls()).await.err();
    assert!(e.is_some(), "a client trusting another CA connected");

    // The Raft service and the clock exchange are for peers only.
    let ca_only = ClientTls { ca: Some(bundle.ca.clone()), cert: None, key: None };
    assert_eq!(raft_vote(&addr, &ca_only).await, Ok(tonic::Code::Unauthenticated), "no client certificate");
    assert_eq!(
        raft_vote(&addr, &bundle.client_tls()).await,
        Ok(tonic::Code::PermissionDenied),
        "a client certificate of the same CA posing as a peer"
    );
    // A node certificate of another CA does not pass the handshake (or, if
    // it did, the guard).
    let (_, other_cert, other_key) = other.nodes[1].clone();
    let foreign = ClientTls { ca: Some(bundle.ca.clone()), cert: Some(other_cert), key: Some(other_key) };
    let r = raft_vote(&addr, &foreign).await;
    assert!(r.is_err() || r == Ok(tonic::Code::PermissionDenied), "{r:?}");
    // A real peer gets past the guard (its empty message is then refused
    // as a bad request, not as a stranger).
    let (_, peer_cert, peer_key) = bundle.nodes[1].clone();
    let peer = ClientTls { ca: Some(bundle.ca.clone()), cert: Some(peer_cert), key: Some(peer_key) };
    let code = raft_vote(&addr, &peer).await.expect("a peer connects");
    assert!(!matches!(code, tonic::Code::PermissionDenied | tonic::Code::Unauthenticated), "{code:?}");
    let ch = channel(&addr, &bundle.client_tls()).await.expect("client connects");
    let clock = ClusterClient::new(ch.clone()).clock(pb::ClockRequest::default()).await;
    assert_eq!(clock.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
    ClusterClient::new(ch).status(pb::ClusterStatusRequest {}).await.expect("the public API answers a client");

    let digests = converged_digests(&c).await;
    assert_eq!(digests.len(), 3, "{digests:?}");
}

fn write_pair(cert: &Path, key: &Path, ca: &Ca, id: u64) -> Vec<u8> {
    let pair = ca.node(id, &[], HOUR).unwrap();
    // Key first, then the certificate: in between, the pair does not
    // match, and the node must keep serving the old one.
    std::fs::write(key, &pair.key_pem).unwrap();
    std::fs::write(cert, &pair.cert_pem).unwrap();
    drover::tls::read_certs(cert).unwrap()[0].to_vec()
}

/// The certificate the node at `addr` presents now.
async fn served_cert(addr: &str, ca: &Path) -> Option<Vec<u8>> {
    let roots = drover::tls::read_roots(&[ca]).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_reload_without_a_restart_under_load_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("rotation").unwrap();
    let bundle = write_bundle_from(&ca, dir.path(), &[1, 2, 3], &[], HOUR).unwrap();
    let c = tls_cluster(&bundle).await;
    let addr = c.nodes[0].addr.clone();
    let pids: Vec<_> = c.nodes.iter().map(|n| n.pid()).collect();

    // Load while node 1's pair is replaced.
    let client = c.client();
    let load = tokio::spawn({
        let client = client.clone();
        async move {
            let mut acked = Vec::new();
            for i in 0..300u32 {
                if let Ok(r) = client.schedule(0, spec("rot", &i.to_be_bytes())).await {
                    acked.push(r.task_id);
                }
            }
            acked
        }
    });
    let (_, cert, key) = bundle.nodes[0].clone();
    let new = write_pair(&cert, &key, &ca, 1);
    wait_until(Duration::from_secs(20), "node 1 to serve its new certificate", || async {
        (served_cert(&addr, &bundle.ca).await? == new).then_some(())
    })
    .await;

    // A bad pair (and a SIGHUP) is logged, and the new one kept.
    std::fs::write(&key, "not a key").unwrap();
    signal_pid(c.nodes[0].pid().unwrap() as i32, Signal::SIGHUP);
    wait_until(Duration::from_secs(20), "the refused reload in node 1's log", || async {
        c.log_tail(1).contains("TLS certificates not reloaded").then_some(())
    })
    .await;
    assert_eq!(served_cert(&addr, &bundle.ca).await, Some(new));

    let acked = load.await.unwrap();
    assert!(!acked.is_empty(), "no write was acknowledged during the rotation");
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    assert_eq!(c.nodes.iter().map(|n| n.pid()).collect::<Vec<_>>(), pids, "a node restarted");
    converged_digests(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_on_a_reachable_address_needs_insecure_and_then_status_warns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let listen = format!("0.0.0.0:{port}");
    let ep = format!("127.0.0.1:{port}");
    let peers = format!("1={ep}");
    let data = dir.path().join("d");
    let base = ["server", "--id", "1", "--listen", &listen, "--peers", &peers, "--bootstrap", "--data-dir"];
    let out = std::process::Command::new(BIN).args(base).arg(&data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--insecure"), "{err}");

    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let mut node = std::process::Command::new(BIN)
        .args(base)
        .arg(&data)
        .arg("--insecure")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = wait_until(Duration::from_secs(30), "the node to lead", || async {
        let (ok, out, _) = cli(&ep, &["cluster", "status"]);
        (ok && out.contains("leader: node 1")).then_some(out)
    })
    .await;
    assert!(status.contains("PLAINTEXT"), "{status}");
    let (_, json, _) = cli(&ep, &["cluster", "status", "--json"]);
    assert!(json.contains("\"insecure_exposed\":true"), "{json}");
    let logged = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(logged.contains("PLAINTEXT"), "{logged}");
    let _ = node.kill();
    let _ = node.wait();
}
