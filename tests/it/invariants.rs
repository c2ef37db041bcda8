//! Invariant checkers over execution records written by
//! `drover worker --builtin record:FILE` (one line per event:
//! `TASK_ID TOKEN ATTEMPT KIND UNIX_NANOS`).

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub token: u64,
    pub attempt: u32,
    pub first_ns: u128,
    pub last_ns: u128,
    pub ended: bool,
}

/// Runs per task, ordered by fencing token.
pub fn runs(path: &Path) -> BTreeMap<u64, Vec<Run>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_task: BTreeMap<u64, BTreeMap<u64, Run>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [task, token, attempt, kind, ns] = f[..] else { panic!("malformed record line {line:?}") };
        let (task, token, attempt, ns): (u64, u64, u32, u128) =
            (task.parse().unwrap(), token.parse().unwrap(), attempt.parse().unwrap(), ns.parse().unwrap());
        let run = by_task.entry(task).or_default().entry(token).or_insert(Run {
            token,
            attempt,
            first_ns: ns,
            last_ns: ns,
            ended: false,
        });
        run.first_ns = run.first_ns.min(ns);
        run.last_ns = run.last_ns.max(ns);
        run.ended |= kind == "end";
    }
    by_task.into_iter().map(|(t, m)| (t, m.into_values().collect())).collect()
}

/// Never concurrently: the runs of one task, in token order, never overlap
/// in time (each run's last event precedes the next run's first).
pub fn assert_no_overlap(path: &Path) {
    for (task, runs) in runs(path) {
        for pair in runs.windows(2) {
            assert!(
                pair[0].last_ns < pair[1].first_ns,
                "NEVER-CONCURRENTLY violated: task {task} run with token {} (until {}) overlaps run with token {} (from {})",
                pair[0].token,
                pair[0].last_ns,
                pair[1].token,
                pair[1].first_ns
            );
        }
    }
}
