//! Replacing a member whose storage was damaged (`drover admin rejoin`;
//! DESIGN.md, "Damaged storage").
//!
//! - [`Membership::replace`] (the leader, under the admin lock): the damaged
//!   node must not answer at its address; its id is **retired first**, so
//!   from that commit on every node refuses its votes and appends, whatever
//!   state a copy of its data dir holds; then a new id (above every id the
//!   cluster has known) is added as a learner at the same address. A learner
//!   never votes and is never counted towards a commit, so the rebuilt node
//!   acknowledges nothing before it holds it.
//! - [`Membership::finish_replacements`] (every leader, once a second):
//!   once the learner has caught up, one membership change (joint consensus
//!   underneath) makes it a voter in the old id's place and drops the old
//!   id. A leader change in between loses nothing: the state (a retired
//!   member and a learner at its address) is in the membership and the
//!   retired set, which every leader sees.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::membership::{probe, Membership};
use super::ApiError;
use crate::consensus::RaftView;
use crate::domain::{Command, CommandResponse, Operation};
use crate::pb;

/// A learner this close to the leader's last log index has caught up.
const CAUGHT_UP: u64 = 100;

/// The member that replaces `old`: a newer id at the same address.
fn replacement_of(view: &RaftView, old: u64) -> Option<u64> {
    let addr = view.addrs.get(&old)?;
    view.addrs.iter().filter(|(id, a)| **id > old && *a == addr).map(|(id, _)| *id).max()
}

impl Membership {
    /// Retire `old` and add a new id as a learner at its address; returns
    /// the new id. Asked again, returns the same id.
    pub async fn replace(&self, old: u64) -> Result<pb::ReplaceNodeResponse, ApiError> {
        let _guard = self.admin.lock().await;
        let view = self.consensus.view();
        let Some(addr) = view.addrs.get(&old).cloned() else {
            return Err(ApiError::NotFound(format!("node {old} is not a member of this cluster")));
        };
        let response = |new_id: u64, m: pb::MembershipResponse| pb::ReplaceNodeResponse {
            new_id,
            addr: addr.clone(),
            membership: Some(m),
        };
        if self.store.is_retired(old)? {
            return match replacement_of(&view, old) {
                Some(new) => Ok(response(new, self.reply())),
                None => Err(ApiError::FailedPrecondition(format!(
                    "node {old} is being removed from this cluster (remove-node); add a new node with add-node instead"
                ))),
            };
        }
        if old == self.consensus.id() {
            return Err(ApiError::FailedPrecondition(format!(
                "node {old} is running (it answered this request): stop it before rejoining it"
            )));
        }
        if view.voters == [old] {
            return Err(ApiError::FailedPrecondition(format!(
                "node {old} is the only voter: there is no one to rebuild it from (restore a backup instead)"
            )));
        }
        let probe_timeout = self.consensus.timing().probe;
        if probe(&self.pool, probe_timeout, old, &addr).await.is_ok() {
            return Err(ApiError::FailedPrecondition(format!(
                "node {old} answers at {addr}: it is running; stop it before rejoining it"
            )));
        }
        let highest = view.addrs.keys().copied().chain(self.store.retired_ids()?).max().unwrap_or(old);
        let new = highest.max(old) + 1;
        // Retire first: from this commit on, node `old` may never vote or
        // append again, whatever a copy of its data says.
        let cmd = Command { stamped_at_ms: self.clock.stamp(), operation: Operation::RetireNode { node_id: old } };
        match self.consensus.propose(cmd).await? {
            CommandResponse::None => {}
            other => return Err(ApiError::internal(format!("unexpected reply {other}"))),
        }
        self.consensus.add_learner(new, addr.clone()).await?;
        tracing::info!(old, new, addr = %addr, "node {old} is replaced: node {new} joins as a learner at its address");
        Ok(response(new, self.reply()))
    }

    /// On the leader, every second: make each caught-up replacement a voter
    /// in its old id's place. Runs until `stop`.
    pub async fn finish_replacements(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.consensus.leadership().ready {
                continue;
            }
            if let Err(e) = self.finish_one().await {
                tracing::warn!(error = %e, "a node replacement did not finish; retrying");
            }
        }
    }

    /// One membership change for the first replacement ready for it.
    async fn finish_one(&self) -> Result<(), ApiError> {
        let view = self.consensus.view();
        let pending: Vec<(u64, u64)> =
            view.addrs.keys().filter_map(|old| replacement_of(&view, *old).map(|new| (*old, new))).collect();
        for (old, new) in pending {
            if !self.store.is_retired(old)? {
                continue;
            }
            let caught_up =
                view.matched.get(&new).copied().flatten().is_some_and(|m| m + CAUGHT_UP >= view.last_log_index);
            if view.learners.contains(&new) && !caught_up {
                continue;
            }
            let _guard = self.admin.lock().await;
            let view = self.consensus.view();
            if !view.addrs.contains_key(&old) {
                continue;
            }
            if view.voters.contains(&old) && view.learners.contains(&new) {
                let voters: BTreeSet<u64> = view.voters.iter().copied().filter(|v| *v != old).chain([new]).collect();
                self.consensus.replace_voters(voters).await?;
                tracing::info!(old, new, "node {new} has caught up and replaces node {old} as a voter");
            } else if !view.voters.contains(&old) {
                self.consensus.remove(old, false).await?;
                tracing::info!(old, new, "node {new} has caught up; node {old} is removed");
            }
            return Ok(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replacement_is_the_newest_id_at_the_old_address() {
        let view = RaftView {
            addrs: [(1, "a".to_string()), (2, "b".to_string()), (3, "c".to_string()), (5, "c".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(replacement_of(&view, 3), Some(5));
        assert_eq!(replacement_of(&view, 5), None);
        assert_eq!(replacement_of(&view, 2), None);
        assert_eq!(replacement_of(&view, 9), None);
    }
}
