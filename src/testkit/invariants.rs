//! Invariant checkers over execution records, shared by the integration
//! tests and the chaos suite.
//!
//! Records are lines written by `drover worker --builtin record:FILE` (and
//! the chaos suite's in-process workers): `TASK_ID TOKEN ATTEMPT KIND
//! UNIX_NANOS`, KIND being `start`, `tick` or `end`.

use std::collections::BTreeMap;
use std::path::Path;

/// One run of a task, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub token: u64,
    pub attempt: u32,
    pub first_ns: u128,
    pub last_ns: u128,
    /// The handler finished (wrote `end`).
    pub ended: bool,
}

/// Runs per task, in fencing-token order. Malformed lines are an error.
pub fn runs(path: &Path) -> Result<BTreeMap<u64, Vec<Run>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut by_task: BTreeMap<u64, BTreeMap<u64, Run>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = match f[..] {
            [task, token, attempt, kind, ns] => {
                (|| Some((task.parse().ok()?, token.parse().ok()?, attempt.parse().ok()?, kind, ns.parse().ok()?)))()
            }
            _ => None,
        };
        let Some((task, token, attempt, kind, ns)): Option<(u64, u64, u32, &str, u128)> = parsed else {
            return Err(format!("malformed record line {line:?}"));
        };
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
    Ok(by_task.into_iter().map(|(t, m)| (t, m.into_values().collect())).collect())
}

/// Never concurrently: the runs of one task, in token order, never overlap
/// in time. Returns every violation found.
pub fn overlaps(runs: &BTreeMap<u64, Vec<Run>>) -> Vec<String> {
    let mut out = Vec::new();
    for (task, runs) in runs {
        for pair in runs.windows(2) {
            if pair[0].last_ns >= pair[1].first_ns {
                out.push(format!(
                    "task {task}: run with token {} (until {}) overlaps run with token {} (from {})",
                    pair[0].token, pair[0].last_ns, pair[1].token, pair[1].first_ns
                ));
            }
        }
    }
    out
}
