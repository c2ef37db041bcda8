//! The chaos suite with auth on (`--auth`): the harness turns enforcement
//! on in the fresh cluster, runs as an admin, and its workers run with a
//! worker-role token; afterwards, auth must still be on at every node and
//! still refuse what it should.

use drover::client::Client;
use drover::domain::auth::{new_token, token_hash};
use drover::pb;
use tonic::Code;

use super::super::CliError;

/// The tokens of one run.
pub struct Tokens {
    /// The workers' token.
    pub worker: String,
    /// The harness's (also in its client), for `drover admin rejoin` in the
    /// `corrupt` fault.
    pub admin: String,
}

async fn create(client: &Client, role: &str, note: &str) -> Result<String, CliError> {
    let token = new_token();
    let req = pb::CreateTokenRequest {
        token_sha256: token_hash(&token).to_vec(),
        role: role.into(),
        note: note.into(),
        ..Default::default()
    };
    client
        .call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(client.auth(i)?.create_token(req).await?.into_inner()) }
        })
        .await
        .map_err(|e| CliError(format!("creating the {role} token: {}", super::super::status_message(&e))))?;
    Ok(token)
}

/// Create an admin and a worker token, and turn auth on (as the admin).
/// `client` is the harness's client without a token; the result is the
/// same client with the admin token.
pub async fn enable(client: Client) -> Result<(Client, Tokens), CliError> {
    let admin = create(&client, "admin", "chaos harness").await?;
    let worker = create(&client, "worker", "chaos workers").await?;
    let client = client.with_token(&admin).map_err(CliError)?;
    client
        .call_idempotent(0, |i| {
            let client = &client;
            async move { Ok(client.auth(i)?.set_enabled(pb::SetAuthRequest { enabled: true }).await?.into_inner()) }
        })
        .await
        .map_err(|e| CliError(format!("turning auth on: {}", super::super::status_message(&e))))?;
    println!("chaos: auth on; the harness runs as admin, the workers with a worker token");
    Ok((client, Tokens { worker, admin }))
}

/// After the faults: at every node, auth is on, a call without a token is
/// UNAUTHENTICATED, and the worker token may not purge dead letters.
pub async fn check(admin: &Client, anonymous: &Client, worker: &Client, nodes: usize) -> Vec<String> {
    let mut violations = Vec::new();
    for i in 0..nodes {
        let who = admin.auth(i);
        match who {
            Ok(mut c) => match c.who_am_i(pb::WhoAmIRequest {}).await {
                Ok(r) if r.get_ref().enabled => {}
                Ok(_) => violations.push(format!("AUTH: node {} reports auth off", i + 1)),
                Err(e) => violations.push(format!("AUTH: node {} did not answer WhoAmI: {e}", i + 1)),
            },
            Err(e) => violations.push(format!("AUTH: node {}: {e}", i + 1)),
        }
        let refused = |r: Result<(), tonic::Status>, want: Code, what: &str| match r {
            Err(s) if s.code() == want => None,
            Err(s) => Some(format!("AUTH: node {}: {what} got {:?}, not {want:?}", i + 1, s.code())),
            Ok(()) => Some(format!("AUTH: node {}: {what} was allowed", i + 1)),
        };
        let status = async {
            anonymous.cluster(i)?.status(pb::ClusterStatusRequest {}).await?;
            Ok(())
        };
        violations.extend(refused(status.await, Code::Unauthenticated, "a status call without a token"));
        let purge = async {
            let target = Some(pb::dead_letter_request::Target::Callback(super::CALLBACK.into()));
            worker.scheduler(i)?.purge_dead_letters(pb::DeadLetterRequest { target, ..Default::default() }).await?;
            Ok(())
        };
        violations.extend(refused(purge.await, Code::PermissionDenied, "a purge with the worker token"));
    }
    violations
}
