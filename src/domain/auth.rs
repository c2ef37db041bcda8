//! Authorization: roles, grants and the principals they name.
//!
//! A grant gives one principal a role, optionally only for callbacks whose
//! names match a glob (`email.*`). A principal is either a bearer token,
//! stored here as its SHA-256 only (the token itself never reaches the
//! server's disk or log), or the subject common name of a client
//! certificate. Grants are replicated state; whether they are enforced is
//! too ([`crate::domain::Operation::SetAuth`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Roles, each including the ones before it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Get, list, status.
    Reader,
    /// Schedule, cancel, register callbacks.
    Producer,
    /// Connect as a worker.
    Worker,
    /// Gates, redrive, purge, periodic schedules, leader transfer.
    Operator,
    /// Membership, backup, tokens and grants.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Reader, Role::Producer, Role::Worker, Role::Operator, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a grant is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKey {
    /// A bearer token, by the SHA-256 of its text.
    Token { sha256: [u8; 32] },
    /// A client certificate, by its subject common name.
    Subject(String),
}

/// One principal's role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `t-` and 12 hex digits of the token's hash, or `c-` and the subject.
    pub id: String,
    pub principal: PrincipalKey,
    pub role: Role,
    /// Globs over callback names; empty: every callback.
    pub callbacks: Vec<String>,
    /// Replicated time of the entry that created it.
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub note: String,
}

impl Grant {
    /// The id of a token's grant.
    pub fn token_id(sha256: &[u8; 32]) -> String {
        format!("t-{}", hex::encode(&sha256[..6]))
    }

    /// The id of a certificate subject's grant.
    pub fn subject_id(subject: &str) -> String {
        format!("c-{subject}")
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// Whether this grant covers `callback`.
    pub fn allows_callback(&self, callback: &str) -> bool {
        allows(&self.callbacks, callback)
    }

    /// Whether this grant covers every callback.
    pub fn unscoped(&self) -> bool {
        self.callbacks.is_empty()
    }
}

/// Every grant and whether they are enforced: the read side, kept by the
/// live index and consulted in front of every call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuthTable {
    pub enabled: bool,
    /// Shared, so that the principal of a call costs no copy.
    grants: BTreeMap<String, Arc<Grant>>,
}

impl AuthTable {
    pub fn put(&mut self, grant: Grant) {
        self.grants.insert(grant.id.clone(), Arc::new(grant));
    }

    pub fn remove(&mut self, id: &str) {
        self.grants.remove(id);
    }

    pub fn grants(&self) -> impl Iterator<Item = &Arc<Grant>> {
        self.grants.values()
    }

    /// The grant of the token whose hash is `sha256`.
    pub fn by_token(&self, sha256: &[u8; 32]) -> Option<&Arc<Grant>> {
        self.grants
            .get(&Grant::token_id(sha256))
            .filter(|g| matches!(&g.principal, PrincipalKey::Token { sha256: h } if h == sha256))
    }

    /// The grant of a certificate subject.
    pub fn by_subject(&self, subject: &str) -> Option<&Arc<Grant>> {
        self.grants.get(&Grant::subject_id(subject))
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Grant>> {
        self.grants.get(id)
    }
}

/// Whether `globs` (empty: all) cover `callback`.
pub fn allows(globs: &[String], callback: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(callback)))
}

/// Check a glob is well formed.
pub fn check_glob(g: &str) -> Result<(), String> {
    if g.is_empty() {
        return Err("an empty callback glob matches nothing".into());
    }
    glob::Pattern::new(g).map(|_| ()).map_err(|e| format!("bad callback glob {g:?}: {e}"))
}

/// SHA-256 of a token's text.
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: `drover_` and 64 random hex digits (256 bits).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("drover_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Worker);
        assert!(Role::Worker > Role::Producer && Role::Producer > Role::Reader);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn globs_scope_callbacks() {
        let g = vec!["email.*".to_string(), "sms".to_string()];
        assert!(allows(&g, "email.send"));
        assert!(allows(&g, "sms"));
        assert!(!allows(&g, "smsx"));
        assert!(!allows(&g, "billing.email.send"));
        assert!(allows(&[], "anything"));
        assert!(check_glob("email.[").is_err());
        assert!(check_glob("").is_err());
    }

    #[test]
    fn tokens_are_random_and_ids_come_from_their_hash() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), "drover_".len() + 64);
        let id = Grant::token_id(&token_hash(&a));
        assert_eq!(id.len(), 14);
        assert_eq!(id, Grant::token_id(&token_hash(&a)));
        assert_ne!(id, Grant::token_id(&token_hash(&b)));
    }
}
