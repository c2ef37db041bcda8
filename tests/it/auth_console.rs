//! The web console and its JSON API with auth on (over TLS, as auth
//! needs): no token is sent to the sign-in page, a bearer token, the
//! sign-in cookie or a client certificate with a grant opens the pages by
//! role; `/metrics` needs a reader unless the node runs `--open-metrics`.

use std::sync::Arc;
use std::time::Duration;

use drover::domain::auth::{new_token, token_hash};
use drover::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::testkit::Spec;

const HOUR: Duration = Duration::from_secs(3600);

/// One HTTPS/1.1 request (Connection: close): (status, head, body).
async fn https(ca: &std::path::Path, addr: &str, req: &str) -> (u16, String, String) {
    https_as(ca, None, addr, req).await
}

/// [`https`], presenting a client certificate `(cert, key)` if given.
async fn https_as(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
    addr: &str,
    req: &str,
) -> (u16, String, String) {
    let roots = drover::tls::read_roots(&[ca]).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                drover::tls::read_certs(cert).expect("cert"),
                drover::tls::read_key(key).expect("key"),
            )
            .expect("client pair"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
        let mut s = connector.connect(name, tcp).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Some((code, head.to_string(), body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), call).await.ok().flatten().unwrap_or((
        0,
        String::new(),
        String::new(),
    ))
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

fn post(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

async fn token(client: &drover::client::Client, role: &str) -> String {
    let token = new_token();
    let req =
        pb::CreateTokenRequest { token_sha256: token_hash(&token).to_vec(), role: role.into(), ..Default::default() };
    client.auth(0).unwrap().create_token(req).await.expect("create token");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_asks_for_a_token_once_auth_is_on_and_serves_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = drover::tls::certs::write_bundle(&dir.path().join("certs"), &[1, 2, 3], &[], HOUR).unwrap();
    let mut spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    spec.tls = Some(bundle.clone());
    spec.http_base_port = Some(0);
    let c = TestCluster::start_spec(spec).await;
    let web = c.nodes[1].http_addr.clone().expect("http");
    let ca = bundle.ca.clone();

    let leader = c.leader().await;
    // Auth off: the console is open.
    assert_eq!(https(&ca, &web, &get("/api/rates", "")).await.0, 200);

    let admin_token = token(&c.client(), "admin").await;
    let admin = c.client().with_token(&admin_token).unwrap();
    admin.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: true }).await.expect("enable");
    let reader = token(&admin, "reader").await;
    crate::auth::settle(&c, &admin_token, 2).await;

    // No token: the sign-in page (401); the JSON API says 401 too.
    wait_until(Duration::from_secs(10), "the console to ask for a token", || async {
        (https(&ca, &web, &get("/", "")).await.0 == 401).then_some(())
    })
    .await;
    let (code, _, body) = https(&ca, &web, &get("/tasks", "")).await;
    assert!(code == 401 && body.contains("action=\"/login\""), "{code} {body}");
    assert_eq!(https(&ca, &web, &get("/api/rates", "")).await.0, 401);
    let bad = format!("Authorization: Bearer {}\r\n", new_token());
    assert_eq!(https(&ca, &web, &get("/api/rates", &bad)).await.0, 401);

    // A reader's bearer token reads; its POSTs are refused (403).
    let as_reader = format!("Authorization: Bearer {reader}\r\n");
    let (code, _, body) = https(&ca, &web, &get("/api/rates", &as_reader)).await;
    assert!(code == 200 && body.starts_with('['), "{code} {body}");
    let (code, _, body) = https(&ca, &web, &post("/actions/gate", &as_reader, "token=x&callback=a&mode=pause")).await;
    assert!(code == 403 && body.contains("needs role operator"), "{code} {body}");

    // Signing in sets an HttpOnly, Secure cookie that opens the pages.
    let (code, _, _) = https(&ca, &web, &post("/login", "", "token=drover_nope")).await;
    assert_eq!(code, 401, "a bad token signed in");
    let (code, head, _) = https(&ca, &web, &post("/login", "", &format!("token={reader}"))).await;
    let cookie = head.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap_or_default().to_string();
    assert!(code == 303 && cookie.contains("HttpOnly") && cookie.contains("Secure"), "{code} {head}");
    let pair = cookie.split(';').next().unwrap_or_default();
    let (code, _, body) = https(&ca, &web, &get("/", &format!("Cookie: {pair}\r\n"))).await;
    assert!(code == 200 && body.contains("drover"), "{code}");

    // An operator's action through a follower's console is checked again
    // on the leader as that operator (not as the forwarding node), and
    // goes through.
    let operator = format!("Authorization: Bearer {}\r\n", token(&admin, "operator").await);
    crate::auth::settle(&c, &admin_token, 3).await;
    admin.schedule(0, drover::pb::TaskSpec { callback: "sms".into(), ..Default::default() }).await.expect("schedule");
    let follower = c.nodes.iter().find(|n| n.id != leader).and_then(|n| n.http_addr.clone()).expect("a follower");
    // (The follower's pages read its own state: wait until it has the
    // callback.)
    let page = wait_until(Duration::from_secs(10), "the follower's page of the callback", || async {
        let (code, _, page) = https(&ca, &follower, &get("/callbacks/sms", &operator)).await;
        (code == 200).then_some(page)
    })
    .await;
    let form = page.split("name=\"token\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
    assert!(!form.is_empty(), "{page}");
    let (code, _, body) =
        https(&ca, &follower, &post("/actions/gate", &operator, &format!("token={form}&callback=sms&mode=pause")))
            .await;
    assert_eq!(code, 303, "{body}");
    let gates = admin.scheduler(0).unwrap().list_gates(pb::ListGatesRequest::default()).await.unwrap().into_inner();
    assert!(gates.gates.iter().any(|g| g.callback == "sms"), "{gates:?}");

    // A gRPC refusal is counted by code (the metrics show it below).
    let refused = c.client_of(c.nodes[1].id).cluster(0).unwrap().status(pb::ClusterStatusRequest {}).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    // A client certificate whose subject has a grant opens the console
    // without a token; without a grant it does not.
    let client_pair = Some((bundle.client_cert.as_path(), bundle.client_key.as_path()));
    assert_eq!(https_as(&ca, client_pair, &web, &get("/", "")).await.0, 401, "a certificate without a grant");
    let req = pb::GrantSubjectRequest { subject: "drover-client".into(), role: "reader".into(), ..Default::default() };
    admin.auth(0).unwrap().grant_subject(req).await.expect("grant the subject");
    crate::auth::settle(&c, &admin_token, 4).await;
    let (code, _, body) = https_as(&ca, client_pair, &web, &get("/", "")).await;
    assert!(code == 200 && body.contains("drover"), "a certificate with a reader grant: {code}");
    let (code, _, _) =
        https_as(&ca, client_pair, &web, &post("/actions/gate", "", "token=x&callback=a&mode=pause")).await;
    assert_eq!(code, 403, "a reader's certificate may not act");

    // Metrics need a reader (a token or a certificate); health stays open.
    assert_eq!(https(&ca, &web, &get("/metrics", "")).await.0, 401, "metrics without a token");
    assert_eq!(https(&ca, &web, &get("/metrics", &bad)).await.0, 401, "metrics with an unknown token");
    let (code, _, metrics) = https(&ca, &web, &get("/metrics", &as_reader)).await;
    assert_eq!(code, 200);
    assert!(metrics.contains("code=\"UNAUTHENTICATED\""), "refusals are not counted");
    assert_eq!(https_as(&ca, client_pair, &web, &get("/metrics", "")).await.0, 200, "metrics with a certificate");
    assert_eq!(https(&ca, &web, &get("/healthz", "")).await.0, 200);
    assert_eq!(https(&ca, &web, &get("/readyz", "")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_metrics_keeps_metrics_open_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = drover::tls::certs::write_bundle(&dir.path().join("certs"), &[1], &[], HOUR).unwrap();
    let mut spec = Spec::new(1, server_bin()).flags(&["--auto-register", "--open-metrics"]);
    spec.tls = Some(bundle.clone());
    spec.http_base_port = Some(0);
    let c = TestCluster::start_spec(spec).await;
    let web = c.nodes[0].http_addr.clone().expect("http");
    let admin_token = token(&c.client(), "admin").await;
    let admin = c.client().with_token(&admin_token).unwrap();
    admin.auth(0).unwrap().set_enabled(pb::SetAuthRequest { enabled: true }).await.expect("enable");
    crate::auth::settle(&c, &admin_token, 1).await;
    assert_eq!(https(&bundle.ca, &web, &get("/", "")).await.0, 401, "the console still needs a token");
    let (code, _, metrics) = https(&bundle.ca, &web, &get("/metrics", "")).await;
    assert!(code == 200 && metrics.contains("drover_"), "{code}");
}
