//! Who is calling and what they may do: the role each RPC needs
//! ([`need`]), the principal a call's credentials name ([`authenticate`]),
//! and the callback scope checks handlers make ([`check_callback`]).
//!
//! The node's guard layer (`node::guard`) runs [`authenticate`] and
//! [`authorize`] in front of every call and puts the [`Principal`] into the
//! request's extensions; handlers that touch a callback then check the
//! grant's scope. A follower that forwards a call passes the caller's
//! identity on ([`Identity`]): a bearer token as it came, a certificate
//! subject as the grant id in [`ON_BEHALF_OF`], which the leader believes
//! only from an authenticated peer.

use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use super::ApiError;
use crate::domain::auth::{token_hash, AuthTable, Grant, Role};

/// Metadata naming the grant a forwarding peer acts for, or
/// [`ANONYMOUS`].
pub const ON_BEHALF_OF: &str = "x-drover-on-behalf-of";
/// [`ON_BEHALF_OF`] for a caller without credentials (let through by a
/// node that had not applied `auth enable` yet): the leader, which may
/// have, decides for itself rather than trusting the forwarding peer.
pub const ANONYMOUS: &str = "-";
/// The HTTP header bearing a token: `authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Node-to-node only: an authenticated peer (checked by the guard with
    /// the peer CA, whatever the grants say).
    Peer,
    /// Nothing: health checks, and asking who one is.
    Nothing,
    Role(Role),
}

/// The role each method needs. A method not listed needs admin.
pub fn need(path: &str) -> Need {
    use Role::*;
    if path.starts_with("/drover.raft.v1.") || path == "/drover.v1.Cluster/Clock" || path == "/drover.v1.Cluster/Join" {
        return Need::Peer;
    }
    if path.starts_with("/grpc.health.v1.") || path == "/drover.v1.Auth/WhoAmI" {
        return Need::Nothing;
    }
    if path.starts_with("/grpc.reflection.") {
        return Need::Role(Reader);
    }
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Role(Admin);
    };
    let role = match (service, method) {
        (
            "drover.v1.Scheduler",
            "GetTask" | "ListTasks" | "ListCallbacks" | "ListGates" | "GcStatus" | "GetSchedule" | "ListSchedules"
            | "ListWorkers",
        ) => Reader,
        ("drover.v1.Scheduler", "Schedule" | "ScheduleBatch" | "CancelTask" | "RegisterCallback") => Producer,
        ("drover.v1.Worker", "Connect") => Worker,
        ("drover.v1.Scheduler", _) => Operator,
        ("drover.v1.Cluster", "Status" | "NodeStatus" | "Digest") => Reader,
        ("drover.v1.Cluster", "TransferLeader") => Operator,
        _ => Admin,
    };
    Need::Role(role)
}

/// Who a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Auth is off and the call named no known grant: it may do anything.
    Anyone,
    /// A cluster member (its certificate names node N and chains to the
    /// peer CA). Peers replicate everything already; they may do anything.
    Peer(u64),
    Grant(Arc<Grant>),
}

impl Principal {
    pub fn name(&self) -> String {
        match self {
            Principal::Anyone => "anyone (auth is off)".into(),
            Principal::Peer(id) => format!("node-{id}"),
            Principal::Grant(g) => g.id.clone(),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Principal::Anyone | Principal::Peer(_) => Role::Admin,
            Principal::Grant(g) => g.role,
        }
    }

    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Principal::Grant(g) => Some(g),
            _ => None,
        }
    }

    /// Refuse unless this principal's grant covers `callback`.
    pub fn check_callback(&self, callback: &str) -> Result<(), ApiError> {
        match self.grant() {
            Some(g) if !g.allows_callback(callback) => Err(ApiError::PermissionDenied(format!(
                "{} may use callbacks {}, not {callback:?}",
                g.id,
                g.callbacks.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Refuse a call that reaches every callback (a listing without a
    /// callback filter) unless the grant covers every callback.
    pub fn check_unscoped(&self, what: &str) -> Result<(), ApiError> {
        match self.grant() {
            Some(g) if !g.unscoped() => Err(ApiError::PermissionDenied(format!(
                "{} may use callbacks {} only: {what}",
                g.id,
                g.callbacks.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// The credentials a call arrived with, as the guard found them.
#[derive(Debug, Default)]
pub struct Credentials {
    /// The `authorization` header's value.
    pub authorization: Option<String>,
    /// The node the caller's certificate names, if it is a valid peer.
    pub peer: Option<u64>,
    /// The common name of the caller's (verified) client certificate.
    pub subject: Option<String>,
    /// The grant a forwarding peer acts for.
    pub on_behalf_of: Option<String>,
}

impl Credentials {
    pub fn from_metadata(headers: &http::HeaderMap) -> Self {
        let text = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        Credentials { authorization: text(AUTHORIZATION), on_behalf_of: text(ON_BEHALF_OF), ..Default::default() }
    }
}

/// The principal `creds` name. With auth off, credentials that name no
/// grant make the caller [`Principal::Anyone`] rather than an error.
pub fn authenticate(table: &AuthTable, creds: &Credentials, now_ms: u64) -> Result<Principal, ApiError> {
    let found = identify(table, creds, now_ms);
    match found {
        Ok(p) => Ok(p),
        Err(_) if !table.enabled => Ok(Principal::Anyone),
        Err(e) => Err(e),
    }
}

fn identify(table: &AuthTable, creds: &Credentials, now_ms: u64) -> Result<Principal, ApiError> {
    let live = |g: Option<&Arc<Grant>>, what: &str| -> Result<Principal, ApiError> {
        match g {
            None => Err(ApiError::Unauthenticated(format!("{what} has no grant (unknown or revoked)"))),
            Some(g) if g.expired(now_ms) => Err(ApiError::Unauthenticated(format!("{} expired", g.id))),
            Some(g) => Ok(Principal::Grant(g.clone())),
        }
    };
    if let Some(header) = &creds.authorization {
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
        return live(table.by_token(&token_hash(token)), "the token");
    }
    if let Some(node) = creds.peer {
        return match creds.on_behalf_of.as_deref() {
            Some(ANONYMOUS) => Err(ApiError::Unauthenticated(format!(
                "no credentials (forwarded by node-{node}): pass a token (--token or DROVER_TOKEN) or a client certificate"
            ))),
            Some(id) => live(table.by_id(id), &format!("grant {id:?} (forwarded by node-{node})")),
            None => Ok(Principal::Peer(node)),
        };
    }
    if let Some(subject) = &creds.subject {
        return live(table.by_subject(subject), &format!("certificate subject {subject:?}"));
    }
    Err(ApiError::Unauthenticated(
        "no credentials: pass a token (--token or DROVER_TOKEN) or a client certificate".into(),
    ))
}

/// The principal of an HTTP request (the console, `/metrics`): its bearer
/// token (`authorization`, `Bearer ...`), else the subject of the client
/// certificate its TLS connection presented (verified at the handshake).
/// `None` while auth is off: anyone may.
pub fn http_principal(
    table: &AuthTable,
    authorization: Option<String>,
    subject: Option<String>,
    now_ms: u64,
) -> Result<Option<Principal>, ApiError> {
    if !table.enabled {
        return Ok(None);
    }
    let subject = if authorization.is_none() { subject } else { None };
    let creds = Credentials { authorization, subject, ..Default::default() };
    authenticate(table, &creds, now_ms).map(Some)
}

/// Refuse unless `principal` has the role `need` asks for.
pub fn authorize(principal: &Principal, need: Need, path: &str) -> Result<(), ApiError> {
    match need {
        Need::Role(role) if principal.role() < role => Err(ApiError::PermissionDenied(format!(
            "{path} needs role {role}; {} has role {}",
            principal.name(),
            principal.role()
        ))),
        _ => Ok(()),
    }
}

/// The principal the guard found for this call; none when the call did not
/// pass the guard (an in-process call from the console, which checks its
/// own callers).
pub fn principal_of<T>(req: &tonic::Request<T>) -> Option<&Principal> {
    req.extensions().get::<Principal>()
}

/// Refuse unless the caller may use `callback`.
pub fn check_callback<T>(req: &tonic::Request<T>, callback: &str) -> Result<(), tonic::Status> {
    match principal_of(req) {
        Some(p) => p.check_callback(callback).map_err(Into::into),
        None => Ok(()),
    }
}

/// Refuse unless the caller's grant covers every callback.
pub fn check_unscoped<T>(req: &tonic::Request<T>, what: &str) -> Result<(), tonic::Status> {
    match principal_of(req) {
        Some(p) => p.check_unscoped(what).map_err(Into::into),
        None => Ok(()),
    }
}

/// The caller's identity, carried onto a forwarded request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    authorization: Option<AsciiMetadataValue>,
    on_behalf_of: Option<AsciiMetadataValue>,
}

impl Identity {
    /// The token as it came; else the grant the caller was found to be
    /// (a certificate subject, or a console user signed in with a token);
    /// else anonymous. A peer calling for itself needs nothing: the leader
    /// sees the forwarding peer.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        let authorization = req.metadata().get(AUTHORIZATION).cloned();
        let on_behalf_of = match (&authorization, principal_of(req)) {
            (Some(_), _) | (None, None | Some(Principal::Peer(_))) => None,
            (None, Some(Principal::Grant(g))) => g.id.parse().ok(),
            (None, Some(Principal::Anyone)) => Some(AsciiMetadataValue::from_static(ANONYMOUS)),
        };
        Identity { authorization, on_behalf_of }
    }

    pub fn attach<T>(&self, mut req: tonic::Request<T>) -> tonic::Request<T> {
        put(req.metadata_mut(), AUTHORIZATION, &self.authorization);
        put(req.metadata_mut(), ON_BEHALF_OF, &self.on_behalf_of);
        req
    }
}

fn put(md: &mut MetadataMap, key: &'static str, value: &Option<AsciiMetadataValue>) {
    if let Some(v) = value {
        md.insert(key, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::PrincipalKey;

    fn grant(token: &str, role: Role, callbacks: &[&str], expires_ms: Option<u64>) -> Grant {
        let sha256 = token_hash(token);
        Grant {
            id: Grant::token_id(&sha256),
            principal: PrincipalKey::Token { sha256 },
            role,
            callbacks: callbacks.iter().map(|c| c.to_string()).collect(),
            created_ms: 0,
            expires_ms,
            note: String::new(),
        }
    }

    fn bearer(t: &str) -> Credentials {
        Credentials { authorization: Some(format!("Bearer {t}")), ..Default::default() }
    }

    /// What a forwarded copy of a request carries, for a caller found to
    /// be `principal` who sent `authorization`.
    fn forwarded(principal: Option<Principal>, authorization: Option<&str>) -> MetadataMap {
        let mut req = tonic::Request::new(());
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        if let Some(a) = authorization {
            req.metadata_mut().insert(AUTHORIZATION, a.parse().unwrap());
        }
        Identity::of(&req).attach(tonic::Request::new(())).metadata().clone()
    }

    #[test]
    fn a_forwarded_request_carries_its_caller() {
        let g = Arc::new(grant("a", Role::Reader, &[], None));
        let md = forwarded(Some(Principal::Grant(g.clone())), Some("Bearer a"));
        assert_eq!(md.get(AUTHORIZATION).unwrap(), "Bearer a");
        assert!(md.get(ON_BEHALF_OF).is_none());
        let md = forwarded(Some(Principal::Grant(g.clone())), None);
        assert_eq!(md.get(ON_BEHALF_OF).unwrap().to_str().unwrap(), g.id);
        let md = forwarded(Some(Principal::Anyone), None);
        assert_eq!(md.get(ON_BEHALF_OF).unwrap(), ANONYMOUS);
        assert!(forwarded(Some(Principal::Peer(3)), None).is_empty());
        assert!(forwarded(None, None).is_empty());
    }

    #[test]
    fn every_method_of_the_proto_has_a_deliberate_need() {
        assert_eq!(need("/drover.raft.v1.Raft/AppendEntries"), Need::Peer);
        assert_eq!(need("/drover.v1.Cluster/Clock"), Need::Peer);
        assert_eq!(need("/drover.v1.Cluster/Join"), Need::Peer);
        assert_eq!(need("/drover.v1.Scheduler/GetTask"), Need::Role(Role::Reader));
        assert_eq!(need("/drover.v1.Scheduler/Schedule"), Need::Role(Role::Producer));
        assert_eq!(need("/drover.v1.Worker/Connect"), Need::Role(Role::Worker));
        assert_eq!(need("/drover.v1.Scheduler/PurgeDeadLetters"), Need::Role(Role::Operator));
        assert_eq!(need("/drover.v1.Cluster/TransferLeader"), Need::Role(Role::Operator));
        assert_eq!(need("/drover.v1.Cluster/RemoveNode"), Need::Role(Role::Admin));
        assert_eq!(need("/drover.v1.Cluster/Backup"), Need::Role(Role::Admin));
        assert_eq!(need("/drover.v1.Auth/CreateToken"), Need::Role(Role::Admin));
        assert_eq!(need("/drover.v1.Auth/WhoAmI"), Need::Nothing);
        assert_eq!(need("/drover.v1.Nope/Nope"), Need::Role(Role::Admin));
        assert_eq!(need("garbage"), Need::Role(Role::Admin));
    }

    #[test]
    fn tokens_name_their_grant_until_revoked_or_expired() {
        let mut t = AuthTable::default();
        t.enabled = true;
        t.put(grant("a", Role::Producer, &["email.*"], Some(1_000)));
        let p = authenticate(&t, &bearer("a"), 999).unwrap();
        assert_eq!(p.role(), Role::Producer);
        assert!(p.check_callback("email.send").is_ok());
        assert!(matches!(p.check_callback("sms"), Err(ApiError::PermissionDenied(_))));
        assert!(matches!(p.check_unscoped("list"), Err(ApiError::PermissionDenied(_))));
        assert!(matches!(authenticate(&t, &bearer("a"), 1_000), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(authenticate(&t, &bearer("b"), 0), Err(ApiError::Unauthenticated(_))));
        let malformed = Credentials { authorization: Some("Basic eA==".into()), ..Default::default() };
        assert!(matches!(authenticate(&t, &malformed, 0), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(authenticate(&t, &Credentials::default(), 0), Err(ApiError::Unauthenticated(_))));
        t.remove(&Grant::token_id(&token_hash("a")));
        assert!(matches!(authenticate(&t, &bearer("a"), 0), Err(ApiError::Unauthenticated(_))));
        // With auth off, unknown credentials are anyone.
        t.enabled = false;
        assert_eq!(authenticate(&t, &bearer("a"), 0).unwrap(), Principal::Anyone);
    }

    #[test]
    fn only_a_peer_may_act_for_a_subject() {
        let mut t = AuthTable::default();
        t.enabled = true;
        let g = Grant {
            id: Grant::subject_id("ops"),
            principal: PrincipalKey::Subject("ops".into()),
            role: Role::Operator,
            callbacks: vec![],
            created_ms: 0,
            expires_ms: None,
            note: String::new(),
        };
        t.put(g);
        let direct = Credentials { subject: Some("ops".into()), ..Default::default() };
        assert_eq!(authenticate(&t, &direct, 0).unwrap().role(), Role::Operator);
        let stranger = Credentials { subject: Some("eve".into()), ..Default::default() };
        assert!(authenticate(&t, &stranger, 0).is_err());
        // A client naming a grant it is not gets nothing from the header.
        let forged = Credentials { on_behalf_of: Some("c-ops".into()), ..Default::default() };
        assert!(authenticate(&t, &forged, 0).is_err());
        let forwarded = Credentials { peer: Some(2), on_behalf_of: Some("c-ops".into()), ..Default::default() };
        assert_eq!(authenticate(&t, &forwarded, 0).unwrap().role(), Role::Operator);
        let peer = Credentials { peer: Some(2), ..Default::default() };
        assert_eq!(authenticate(&t, &peer, 0).unwrap(), Principal::Peer(2));
        // A peer forwarding an anonymous caller does not lend it its rank.
        let anonymous = Credentials { peer: Some(2), on_behalf_of: Some(ANONYMOUS.into()), ..Default::default() };
        assert!(matches!(authenticate(&t, &anonymous, 0), Err(ApiError::Unauthenticated(_))));
        let p = authenticate(&t, &direct, 0).unwrap();
        assert!(authorize(&p, Need::Role(Role::Operator), "/x").is_ok());
        assert!(matches!(authorize(&p, Need::Role(Role::Admin), "/x"), Err(ApiError::PermissionDenied(_))));
    }
}
