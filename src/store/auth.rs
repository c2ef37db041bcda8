//! Apply of grants and of the switch that enforces them.

use super::apply::{Applier, ApplyBatch};
use super::index::IndexOp;
use super::{keys, StoreError};
use crate::domain::auth::{Grant, PrincipalKey, Role};
use crate::domain::{CommandResponse, Rejection};
use crate::encoding;

impl Applier {
    pub(super) fn put_grant(&mut self, b: &mut ApplyBatch<'_>, grant: &Grant) -> Result<CommandResponse, StoreError> {
        let expected = match &grant.principal {
            PrincipalKey::Token { sha256 } => Grant::token_id(sha256),
            PrincipalKey::Subject(s) => Grant::subject_id(s),
        };
        if grant.id != expected {
            return Ok(CommandResponse::Rejected(Rejection::InvalidArgument(format!(
                "grant id {:?} does not match its principal (expected {expected:?})",
                grant.id
            ))));
        }
        if grant.expires_ms.is_some_and(|e| e <= self.now_ms) {
            return Ok(CommandResponse::Rejected(Rejection::InvalidArgument(
                "the grant would expire at a time that has already passed".into(),
            )));
        }
        if let Some(existing) = self.grants.get(&grant.id) {
            // A retry of the same request finds its own grant: the same
            // principal, role, scope and note (its expiry was computed
            // again from a later time).
            let same = Grant { created_ms: existing.created_ms, expires_ms: existing.expires_ms, ..grant.clone() };
            if &same == existing {
                return Ok(CommandResponse::GrantSaved { created: false });
            }
            return Ok(CommandResponse::Rejected(Rejection::FailedPrecondition(format!(
                "grant {} already exists; revoke it first",
                grant.id
            ))));
        }
        let grant = Grant { created_ms: self.now_ms, ..grant.clone() };
        b.put(&keys::grant(&grant.id), &encoding::encode(&grant))?;
        self.grants.insert(grant.id.clone(), grant.clone());
        b.index_ops.push(IndexOp::PutGrant(Box::new(grant)));
        Ok(CommandResponse::GrantSaved { created: true })
    }

    pub(super) fn revoke_grant(&mut self, b: &mut ApplyBatch<'_>, id: &str) -> Result<CommandResponse, StoreError> {
        if self.grants.remove(id).is_none() {
            return Ok(CommandResponse::GrantRevoked { existed: false });
        }
        b.delete(&keys::grant(id))?;
        b.index_ops.push(IndexOp::RemoveGrant(id.to_string()));
        Ok(CommandResponse::GrantRevoked { existed: true })
    }

    pub(super) fn set_auth(&mut self, b: &mut ApplyBatch<'_>, enabled: bool) -> Result<CommandResponse, StoreError> {
        if enabled && !self.grants.values().any(|g| is_full_admin(g, self.now_ms)) {
            return Ok(CommandResponse::Rejected(Rejection::FailedPrecondition(
                "no unexpired admin grant for every callback exists: enabling auth now would lock everyone out \
                 (create one with `drover auth token create --role admin`)"
                    .into(),
            )));
        }
        if self.auth_enabled == enabled {
            return Ok(CommandResponse::AuthSet { changed: false });
        }
        self.auth_enabled = enabled;
        b.put(keys::SM_AUTH_ENABLED, &encoding::encode(&u64::from(enabled)))?;
        b.index_ops.push(IndexOp::SetAuth(enabled));
        Ok(CommandResponse::AuthSet { changed: true })
    }
}

/// An admin grant, unscoped and not expired at `now_ms`.
pub fn is_full_admin(g: &Grant, now_ms: u64) -> bool {
    g.role == Role::Admin && g.unscoped() && !g.expired(now_ms)
}
