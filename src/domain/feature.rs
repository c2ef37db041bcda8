//! Feature levels: what a binary can apply, and what a cluster may use.
//!
//! Every release that changes what nodes exchange or write (a new log
//! entry, a new on-disk record, a new header peers require) raises
//! [`SUPPORTED`], this binary's highest level, and adds a row to
//! [`LEVELS`]. The cluster's *active* level is replicated state (the last
//! [`Operation::SetFeatureLevel`] applied; absent means
//! [`LEVEL_0_1_0`]): a node proposes an entry, writes a record or requires
//! a header of a level only once the cluster has reached that level, and
//! the level is raised only once every member reports that it speaks it.
//! A node of 0.1.0 reports no level: it counts as [`LEVEL_0_1_0`].
//!
//! Adding a level (DESIGN.md, "Feature levels"): bump [`SUPPORTED`], add
//! its row to [`LEVELS`], give the new entries (or fields) that level in
//! [`Operation::feature_level`], and make the code that would use them
//! check [`active`](crate::raft::identity::Identity::active_level) first.

use super::Operation;

/// A feature level: 1 is release 0.1.0; each later level adds to it.
pub type FeatureLevel = u32;

/// Release 0.1.0, and any node that does not report a level.
pub const LEVEL_0_1_0: FeatureLevel = 1;

/// Cluster identity (`SetClusterId` and the envelope on every node-to-node
/// message), `SkipSchedule`, CRC-sealed Raft records on disk, and
/// `SetFeatureLevel` itself.
pub const LEVEL_IDENTITY: FeatureLevel = 2;

/// Trace contexts on tasks and schedules (the `Traced` entry, and the
/// trace rows it writes).
pub const LEVEL_TRACES: FeatureLevel = 3;

/// The highest level this binary speaks.
pub const SUPPORTED: FeatureLevel = LEVEL_TRACES;

/// Every level: number, first release, what it adds.
pub const LEVELS: &[(FeatureLevel, &str, &str)] = &[
    (LEVEL_0_1_0, "0.1.0", "the replicated core (every log entry of 0.1.0; unsealed Raft records)"),
    (
        LEVEL_IDENTITY,
        "0.2.0",
        "cluster IDs (the SetClusterId entry; every node-to-node message must carry the envelope), the SkipSchedule \
         entry, CRC-sealed Raft log entries, vote and log ids on disk, and the SetFeatureLevel entry",
    ),
    (
        LEVEL_TRACES,
        "0.3.0",
        "W3C trace contexts on tasks and schedules (the Traced entry wrapping a schedule, and the trace rows it \
         writes)",
    ),
];

/// What a level adds, for messages.
pub fn describe(level: FeatureLevel) -> &'static str {
    LEVELS.iter().find(|(l, _, _)| *l == level).map_or("unknown to this binary", |(_, _, what)| what)
}

impl Operation {
    /// The lowest cluster feature level at which this entry may be
    /// proposed: every member must be able to decode and apply it.
    pub fn feature_level(&self) -> FeatureLevel {
        match self {
            Operation::SkipSchedule { .. } | Operation::SetClusterId { .. } => LEVEL_IDENTITY,
            // Raising to a level needs every member to speak it; the
            // proposer checks the members, not the active level.
            Operation::SetFeatureLevel { level } => (*level).max(LEVEL_IDENTITY),
            Operation::Traced { operation, .. } => operation.feature_level().max(LEVEL_TRACES),
            _ => LEVEL_0_1_0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_level_up_to_this_binarys_in_order() {
        let levels: Vec<FeatureLevel> = LEVELS.iter().map(|(l, _, _)| *l).collect();
        assert_eq!(levels, (LEVEL_0_1_0..=SUPPORTED).collect::<Vec<_>>());
    }

    #[test]
    fn entries_of_0_1_0_need_level_1_and_the_new_ones_level_2() {
        let levels = [
            Operation::Cancel { task_id: 1 }.feature_level(),
            Operation::SetClusterId { cluster_id: super::super::ClusterId(1) }.feature_level(),
            Operation::SetFeatureLevel { level: 2 }.feature_level(),
            Operation::SetFeatureLevel { level: 3 }.feature_level(),
        ];
        assert_eq!(levels, [LEVEL_0_1_0, 2, 2, 3]);
    }

    /// An entry's variant tag (bincode: a little-endian u32 after the
    /// format byte).
    fn tag(op: &Operation) -> u32 {
        let bytes = crate::encoding::encode(op);
        u32::from_le_bytes(bytes[1..5].try_into().unwrap())
    }

    #[test]
    fn the_traced_entry_is_appended_so_the_entries_of_earlier_levels_encode_as_before() {
        // The last entry of level 2 keeps its tag; level 3's comes after it,
        // so a binary of level 2 reads it as an unknown (newer) entry, never
        // as another.
        assert_eq!(tag(&Operation::SetFeatureLevel { level: 2 }), 28);
        let traced = Operation::Traced { operation: Box::new(Operation::Cancel { task_id: 1 }), traces: vec![None] };
        assert_eq!(tag(&traced), 29);
        assert_eq!(tag(&Operation::Schedule { tasks: Vec::new(), auto_register: false }), 0);
    }

    #[test]
    fn a_traced_schedule_needs_level_3_and_an_untraced_one_stays_as_it_was() {
        let schedule = Operation::Schedule { tasks: Vec::new(), auto_register: false };
        assert_eq!(schedule.clone().traced(vec![None]), schedule);
        let trace =
            crate::domain::trace::TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
                .unwrap();
        let traced = schedule.traced(vec![trace]);
        assert!(matches!(traced, Operation::Traced { .. }));
        assert_eq!(traced.feature_level(), LEVEL_TRACES);
    }
}
