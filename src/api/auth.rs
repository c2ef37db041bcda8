//! The `Auth` service: grants (tokens and certificate subjects), and the
//! switch that enforces them. Who may call what is decided in front of
//! every call ([`super::access`]); this service only edits and shows the
//! replicated grants.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::{self, Principal};
use super::forward::{leader_rpc, Forwarder};
use super::scheduler::SchedulerService;
use super::ApiError;
use crate::domain::auth::{check_glob, Grant, PrincipalKey, Role};
use crate::domain::{CommandResponse, Operation};
use crate::pb;
use crate::pb::auth_client::AuthClient;
use crate::store::index;

/// Longest note kept on a grant.
const MAX_NOTE_BYTES: usize = 1024;
/// Bounds of a grant's callback scope.
const MAX_GLOBS: usize = 64;
const MAX_GLOB_BYTES: usize = 256;

pub struct AuthService {
    pub forward: Forwarder,
    /// For proposing (stamp and write) and reading the index.
    pub scheduler: Arc<SchedulerService>,
    /// Whether this node authenticates its peers by certificate: auth is
    /// only turned on where it does.
    pub peer_tls: bool,
}

impl AuthService {
    pub fn into_server(self: Arc<Self>) -> pb::auth_server::AuthServer<Self> {
        pb::auth_server::AuthServer::from_arc(self)
    }

    fn grant_by_id(&self, id: &str) -> Option<Arc<Grant>> {
        index::lock(&self.scheduler.index).auth().by_id(id).cloned()
    }

    /// Leader only: check and save a grant of `role` to `principal`.
    async fn grant(
        &self,
        principal: PrincipalKey,
        role: &str,
        callbacks: &[String],
        expires_in_ms: u64,
        note: &str,
    ) -> Result<pb::GrantInfo, ApiError> {
        let now = self.scheduler.clock.stamp();
        let grant = build_grant(principal, role, callbacks.to_vec(), expires_in_ms, note.to_string(), now)?;
        let id = grant.id.clone();
        let created = match self.scheduler.write(Operation::PutGrant { grant }).await? {
            CommandResponse::GrantSaved { created } => created,
            other => return Err(ApiError::internal(format!("unexpected reply {other}"))),
        };
        let now = self.scheduler.clock.stamp();
        let saved = self.grant_by_id(&id);
        let saved = saved.ok_or_else(|| ApiError::internal(format!("grant {id} was saved but is not in the index")))?;
        Ok(pb::GrantInfo { created, ..grant_to_pb(&saved, now) })
    }
}

/// A grant from a request's role, scope, expiry and note; its id and
/// principal from `principal`.
fn build_grant(
    principal: PrincipalKey,
    role: &str,
    callbacks: Vec<String>,
    expires_in_ms: u64,
    note: String,
    now_ms: u64,
) -> Result<Grant, ApiError> {
    let role = Role::parse(role).ok_or_else(|| {
        let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
        ApiError::InvalidArgument(format!("unknown role {role:?}: use one of {}", names.join(", ")))
    })?;
    if callbacks.len() > MAX_GLOBS || callbacks.iter().any(|g| g.len() > MAX_GLOB_BYTES) {
        return Err(ApiError::InvalidArgument(format!(
            "a grant takes at most {MAX_GLOBS} callback globs of at most {MAX_GLOB_BYTES} bytes each"
        )));
    }
    for g in &callbacks {
        check_glob(g).map_err(ApiError::InvalidArgument)?;
    }
    if note.len() > MAX_NOTE_BYTES {
        return Err(ApiError::InvalidArgument(format!("the note is over {MAX_NOTE_BYTES} bytes")));
    }
    let id = match &principal {
        PrincipalKey::Token { sha256 } => Grant::token_id(sha256),
        PrincipalKey::Subject(s) => Grant::subject_id(s),
    };
    let expires_ms = (expires_in_ms > 0).then(|| now_ms.saturating_add(expires_in_ms));
    Ok(Grant { id, principal, role, callbacks, created_ms: 0, expires_ms, note })
}

fn grant_to_pb(g: &Grant, now_ms: u64) -> pb::GrantInfo {
    let (kind, subject) = match &g.principal {
        PrincipalKey::Token { .. } => ("token", String::new()),
        PrincipalKey::Subject(s) => ("certificate", s.clone()),
    };
    pb::GrantInfo {
        id: g.id.clone(),
        kind: kind.into(),
        subject,
        role: g.role.name().into(),
        callbacks: g.callbacks.clone(),
        created_unix_ms: g.created_ms,
        expires_unix_ms: g.expires_ms.unwrap_or(0),
        expired: g.expired(now_ms),
        note: g.note.clone(),
        created: false,
    }
}

fn status_of(enabled: bool, principal: Option<&Principal>, changed: bool) -> pb::AuthStatus {
    let principal = principal.cloned().unwrap_or(Principal::Anyone);
    let (name, role, callbacks) = match &principal {
        Principal::Anyone => (String::new(), String::new(), vec![]),
        p => (p.name(), p.role().name().to_string(), p.grant().map(|g| g.callbacks.clone()).unwrap_or_default()),
    };
    pb::AuthStatus { enabled, principal: name, role, callbacks, changed }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn create_token(&self, request: Request<pb::CreateTokenRequest>) -> Result<Response<pb::GrantInfo>, Status> {
        leader_rpc!(self, request, AuthClient::new, create_token, |req| {
            let sha256: [u8; 32] = req.token_sha256.as_slice().try_into().map_err(|_| {
                ApiError::InvalidArgument(format!(
                    "token_sha256 must be 32 bytes (the SHA-256 of the token), not {}",
                    req.token_sha256.len()
                ))
            })?;
            self.grant(PrincipalKey::Token { sha256 }, &req.role, &req.callbacks, req.expires_in_ms, &req.note).await
        })
    }

    async fn grant_subject(
        &self,
        request: Request<pb::GrantSubjectRequest>,
    ) -> Result<Response<pb::GrantInfo>, Status> {
        leader_rpc!(self, request, AuthClient::new, grant_subject, |req| {
            let subject = req.subject.trim().to_string();
            if subject.is_empty() || subject.len() > 256 {
                return Err(ApiError::InvalidArgument(
                    "subject must be a certificate's common name, 1 to 256 bytes".into(),
                ));
            }
            self.grant(PrincipalKey::Subject(subject), &req.role, &req.callbacks, req.expires_in_ms, &req.note).await
        })
    }

    async fn list_grants(
        &self,
        _request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let now = self.scheduler.clock.stamp();
        let index = index::lock(&self.scheduler.index);
        let grants = index.auth().grants().map(|g| grant_to_pb(g, now)).collect();
        Ok(Response::new(pb::ListGrantsResponse { grants, enabled: index.auth().enabled }))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        leader_rpc!(self, request, AuthClient::new, revoke, |req| {
            match self.scheduler.write(Operation::RevokeGrant { id: req.id.clone() }).await? {
                CommandResponse::GrantRevoked { existed } => Ok(pb::RevokeResponse { existed }),
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn set_enabled(&self, request: Request<pb::SetAuthRequest>) -> Result<Response<pb::AuthStatus>, Status> {
        let caller = access::principal_of(&request).cloned();
        let enabled = request.get_ref().enabled;
        if enabled {
            // The caller must be able to manage grants once auth is on.
            let full_admin =
                caller.as_ref().and_then(Principal::grant).is_some_and(|g| g.role == Role::Admin && g.unscoped())
                    || matches!(caller, Some(Principal::Peer(_)));
            if !full_admin {
                return Err(Status::failed_precondition(
                    "turning auth on needs an admin grant for every callback as the caller, so that you are not locked \
                     out: create one with `drover auth token create --role admin` and pass it with --token",
                ));
            }
            if !self.peer_tls {
                return Err(Status::failed_precondition(
                    "auth needs TLS with peer certificates (--tls-cert, --peer-ca, ...): in plaintext, tokens cross \
                     the network in clear and peers cannot prove who they are",
                ));
            }
        }
        leader_rpc!(self, request, AuthClient::new, set_enabled, |req| {
            match self.scheduler.write(Operation::SetAuth { enabled: req.enabled }).await? {
                CommandResponse::AuthSet { changed } => Ok(status_of(req.enabled, caller.as_ref(), changed)),
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::AuthStatus>, Status> {
        let enabled = index::lock(&self.scheduler.index).auth().enabled;
        Ok(Response::new(status_of(enabled, access::principal_of(&request), false)))
    }
}
