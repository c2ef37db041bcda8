//! Credentials end what they cover: a worker stream opened with a grant
//! that is revoked, or that expires (in replicated time), is closed with
//! `UNAUTHENTICATED`, and nothing it sends afterwards counts.
//!
//! Its running tasks go back to their queues without an attempt counted,
//! as an undelivered assignment would, but only once their lease has
//! lapsed: the worker may still be running them until then (it fences
//! itself at its lease, which nobody renews any more), and a task never
//! runs on two workers at once. A new session that re-attaches a task
//! before that (the worker came back with a valid credential) keeps it.
//!
//! The check runs on the leader's dispatcher, which owns every stream,
//! at most [`CHECK_EVERY`] apart and before each batch of completions is
//! proposed (a message of a closed stream is refused on arrival); a
//! revocation is applied on the leader before its `RevokeGrant` is
//! acknowledged, so a stream ends within [`CHECK_EVERY`] of the revoke's
//! answer (or of the expiry).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::Dispatcher;
use super::protocol::ToWorker;
use super::SessionId;
use crate::domain::auth::AuthTable;
use crate::store::index;

/// Longest between two checks of the sessions' grants.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why a grant no longer admits anyone: revoked (gone from the table) or
/// expired at `now_ms`. `None` while it holds, or while auth is off.
pub fn lapsed(table: &AuthTable, grant: &str, now_ms: u64) -> Option<String> {
    if !table.enabled {
        return None;
    }
    match table.by_id(grant) {
        None => Some(format!("the grant {grant} this worker connected with was revoked")),
        Some(g) if g.expired(now_ms) => Some(format!("the grant {grant} this worker connected with expired")),
        Some(_) => None,
    }
}

impl Dispatcher {
    /// Close every session whose grant lapsed; at most every
    /// [`CHECK_EVERY`].
    pub(super) fn check_grants(&mut self, now: Instant) {
        if now.duration_since(self.last_grant_check) < CHECK_EVERY {
            return;
        }
        self.last_grant_check = now;
        let all: BTreeSet<SessionId> = self.sessions.keys().copied().collect();
        self.revoke_lapsed(all);
    }

    /// Before completions are proposed: close the sessions among theirs
    /// whose grant lapsed since the last check, and drop their completions.
    pub(super) fn refuse_lapsed_completions(&mut self) {
        let senders: BTreeSet<SessionId> = self.completions.iter().map(|(id, _)| *id).collect();
        if self.revoke_lapsed(senders) {
            let revoked = &self.revoked;
            self.completions.retain(|(session, _)| !revoked.contains(session));
        }
    }

    /// Close those of `sessions` whose grant lapsed (one look at the
    /// grants for all of them); true if any was closed.
    fn revoke_lapsed(&mut self, sessions: BTreeSet<SessionId>) -> bool {
        let granted: Vec<(SessionId, &str)> =
            sessions.iter().filter_map(|id| Some((*id, self.sessions.get(id)?.grant.as_deref()?))).collect();
        if granted.is_empty() {
            return false;
        }
        let now_ms = self.deps.clock.stamp();
        let ended: Vec<(SessionId, String)> = {
            let index = index::lock(&self.deps.index);
            granted.into_iter().filter_map(|(id, grant)| Some((id, lapsed(index.auth(), grant, now_ms)?))).collect()
        };
        let any = !ended.is_empty();
        for (id, reason) in ended {
            self.revoke(id, reason);
        }
        any
    }

    /// Close `session` with `reason`; its leases are released once they
    /// lapse, unless another session re-attaches them first.
    fn revoke(&mut self, session: SessionId, reason: String) {
        let Some(s) = self.sessions.get(&session) else { return };
        tracing::warn!(worker = %s.worker_id, session, %reason, "closing a worker stream: its credential no longer holds");
        s.send(ToWorker::Revoked(reason));
        self.revoked.insert(session);
        let mut held = 0;
        for lease in self.leases.values_mut().filter(|l| l.session == Some(session)) {
            lease.session = None;
            lease.release_at_lapse = true;
            held += 1;
        }
        if held > 0 {
            tracing::info!(
                session,
                tasks = held,
                "the revoked worker's tasks go back to their queues when their leases lapse"
            );
        }
        self.disconnect(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::{Grant, PrincipalKey, Role};

    fn table(enabled: bool, expires_ms: Option<u64>) -> AuthTable {
        let mut t = AuthTable::default();
        t.enabled = enabled;
        t.put(Grant {
            id: "t-1".into(),
            principal: PrincipalKey::Subject("w".into()),
            role: Role::Worker,
            callbacks: Vec::new(),
            created_ms: 0,
            expires_ms,
            note: String::new(),
        });
        t
    }

    #[test]
    fn a_grant_lapses_when_revoked_or_expired_and_only_while_auth_is_on() {
        assert_eq!(lapsed(&table(true, None), "t-1", 10), None);
        assert!(lapsed(&table(true, None), "t-2", 10).is_some_and(|r| r.contains("revoked")));
        assert_eq!(lapsed(&table(true, Some(100)), "t-1", 99), None);
        assert!(lapsed(&table(true, Some(100)), "t-1", 100).is_some_and(|r| r.contains("expired")));
        assert_eq!(lapsed(&table(false, Some(100)), "t-2", 100), None, "auth off: nothing is refused");
    }
}
