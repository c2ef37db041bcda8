//! Drover's own on-disk encoding of Raft log ids, votes, entries and
//! memberships.
//!
//! openraft's serde layouts changed between alphas, so nothing openraft
//! derives ever reaches disk. Each record here is a plain struct, encoded with
//! bincode behind a one-byte format version, and sealed with a CRC-32
//! ([`crate::encoding::SEALED`]): a damaged entry or vote fails to decode,
//! at start (`raft::check`) and whenever it is read. Records written by
//! earlier builds (unsealed) still decode.

use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::RaftEntry;
use serde::{Deserialize, Serialize};

use super::{Entry, EntryPayload, LogId, Membership, Node, StoredMembership, Vote};
use crate::domain::legacy::CommandV1;
use crate::domain::Command;
use crate::encoding::{decode, decode_raw, CodecError, Record};

/// Sealed ([`crate::encoding::SEALED`]) from feature level 2 on; plain
/// format 2 (what 0.1.0 reads) below it (see `raft::versions`).
fn encode_as<T: Serialize>(seal: bool, value: &T) -> Vec<u8> {
    if seal {
        crate::encoding::encode_sealed(value)
    } else {
        crate::encoding::encode(value)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIdRecord {
    pub term: u64,
    pub node_id: u64,
    pub index: u64,
}

impl From<&LogId> for LogIdRecord {
    fn from(l: &LogId) -> Self {
        LogIdRecord { term: l.leader_id.term, node_id: l.leader_id.node_id, index: l.index }
    }
}

impl From<LogIdRecord> for LogId {
    fn from(r: LogIdRecord) -> Self {
        LogId::new(openraft::impls::leader_id_adv::LeaderId { term: r.term, node_id: r.node_id }, r.index)
    }
}

#[derive(Serialize, Deserialize)]
struct VoteRecord {
    term: u64,
    node_id: u64,
    committed: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct MembershipRecord {
    configs: Vec<Vec<u64>>,
    nodes: Vec<(u64, String)>,
}

impl From<&Membership> for MembershipRecord {
    fn from(m: &Membership) -> Self {
        MembershipRecord {
            configs: m.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }
}

impl TryFrom<MembershipRecord> for Membership {
    type Error = std::io::Error;
    fn try_from(r: MembershipRecord) -> Result<Self, Self::Error> {
        let configs: Vec<BTreeSet<u64>> = r.configs.into_iter().map(|c| c.into_iter().collect()).collect();
        let nodes: BTreeMap<u64, Node> = r.nodes.into_iter().map(|(id, addr)| (id, Node { addr })).collect();
        Membership::new(configs, nodes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredMembershipRecord {
    log_id: Option<LogIdRecord>,
    membership: MembershipRecord,
}

#[derive(Serialize, Deserialize)]
enum PayloadRecord {
    Blank,
    Normal(Command),
    Membership(MembershipRecord),
}

#[derive(Serialize, Deserialize)]
struct EntryRecord {
    log_id: LogIdRecord,
    payload: PayloadRecord,
}

/// A log entry as format 1 wrote it (its command in format 1's layout).
#[derive(Deserialize)]
enum PayloadRecordV1 {
    Blank,
    Normal(CommandV1),
    Membership(MembershipRecord),
}

#[derive(Deserialize)]
struct EntryRecordV1 {
    log_id: LogIdRecord,
    payload: PayloadRecordV1,
}

impl Record for EntryRecord {
    fn from_format_1(body: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let r: EntryRecordV1 = decode_raw(body)?;
        let payload = match r.payload {
            PayloadRecordV1::Blank => PayloadRecord::Blank,
            PayloadRecordV1::Normal(cmd) => PayloadRecord::Normal(cmd.into()),
            PayloadRecordV1::Membership(m) => PayloadRecord::Membership(m),
        };
        Ok(EntryRecord { log_id: r.log_id, payload })
    }
}

impl Record for LogIdRecord {}
impl Record for VoteRecord {}
impl Record for StoredMembershipRecord {}

pub fn encode_log_id(l: &LogId) -> Vec<u8> {
    encode_log_id_as(l, true)
}

pub fn encode_log_id_as(l: &LogId, seal: bool) -> Vec<u8> {
    encode_as(seal, &LogIdRecord::from(l))
}

pub fn decode_log_id(bytes: &[u8]) -> Result<LogId, CodecError> {
    decode::<LogIdRecord>(bytes).map(LogId::from)
}

pub fn encode_vote(v: &Vote) -> Vec<u8> {
    encode_vote_as(v, true)
}

pub fn encode_vote_as(v: &Vote, seal: bool) -> Vec<u8> {
    encode_as(seal, &VoteRecord { term: v.leader_id.term, node_id: v.leader_id.node_id, committed: v.committed })
}

pub fn decode_vote(bytes: &[u8]) -> Result<Vote, CodecError> {
    let r: VoteRecord = decode(bytes)?;
    let mut vote = Vote::new(r.term, r.node_id);
    vote.committed = r.committed;
    Ok(vote)
}

pub fn encode_entry(e: &Entry) -> Vec<u8> {
    encode_entry_as(e, true)
}

pub fn encode_entry_as(e: &Entry, seal: bool) -> Vec<u8> {
    let payload = match &e.payload {
        EntryPayload::Blank => PayloadRecord::Blank,
        EntryPayload::Normal(cmd) => PayloadRecord::Normal(cmd.clone()),
        EntryPayload::Membership(m) => PayloadRecord::Membership(m.into()),
    };
    encode_as(seal, &EntryRecord { log_id: (&e.log_id).into(), payload })
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, std::io::Error> {
    let r: EntryRecord = decode(bytes)?;
    let log_id = LogId::from(r.log_id);
    Ok(match r.payload {
        PayloadRecord::Blank => Entry::new_blank(log_id),
        PayloadRecord::Normal(cmd) => Entry::new_normal(log_id, cmd),
        PayloadRecord::Membership(m) => Entry::new_membership(log_id, m.try_into()?),
    })
}

pub fn encode_stored_membership(m: &StoredMembership) -> Vec<u8> {
    encode_stored_membership_as(m, true)
}

pub fn encode_stored_membership_as(m: &StoredMembership, seal: bool) -> Vec<u8> {
    encode_as(
        seal,
        &StoredMembershipRecord {
            log_id: m.log_id().as_ref().map(LogIdRecord::from),
            membership: m.membership().into(),
        },
    )
}

pub fn decode_stored_membership(bytes: &[u8]) -> Result<StoredMembership, std::io::Error> {
    let r: StoredMembershipRecord = decode(bytes)?;
    Ok(StoredMembership::new(r.log_id.map(LogId::from), r.membership.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_roundtrip_keeps_every_payload_kind() {
        let id = LogId::from(LogIdRecord { term: 3, node_id: 2, index: 17 });
        let mut nodes = BTreeMap::new();
        nodes.insert(1u64, Node { addr: "127.0.0.1:1".into() });
        nodes.insert(2u64, Node { addr: "127.0.0.1:2".into() });
        let m = Membership::new(vec![[1u64, 2].into_iter().collect()], nodes).unwrap();
        for e in [Entry::new_blank(id), Entry::new_membership(id, m)] {
            let back = decode_entry(&encode_entry(&e)).unwrap();
            assert_eq!(back, e);
        }
    }

    /// Below feature level 2 records are plain format 2, what 0.1.0 reads
    /// (it knows no sealed format); from level 2 on sealed. Both decode.
    #[test]
    fn records_are_sealed_only_when_asked_and_both_decode() {
        let id = LogId::from(LogIdRecord { term: 3, node_id: 2, index: 17 });
        let e = Entry::new_blank(id);
        let plain = encode_entry_as(&e, false);
        assert_eq!(plain[0], crate::encoding::FORMAT);
        assert_eq!(encode_entry_as(&e, true)[0], crate::encoding::SEALED);
        assert_eq!(decode_entry(&plain).unwrap(), e);
        let vote = Vote::new(4, 1);
        assert_eq!(encode_vote_as(&vote, false)[0], crate::encoding::FORMAT);
        assert_eq!(decode_vote(&encode_vote_as(&vote, false)).unwrap(), vote);
        assert_eq!(encode_log_id_as(&id, false)[0], crate::encoding::FORMAT);
        assert_eq!(decode_log_id(&encode_log_id_as(&id, false)).unwrap(), id);
    }

    #[test]
    fn unknown_format_version_is_an_error_not_garbage() {
        let mut bytes = encode_log_id(&LogId::from(LogIdRecord { term: 1, node_id: 1, index: 1 }));
        bytes[0] = 99;
        assert!(matches!(decode_log_id(&bytes), Err(CodecError::Version(99))));
    }
}
