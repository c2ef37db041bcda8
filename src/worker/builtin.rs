//! Handlers built into `drover worker --builtin`, for benchmarks and tests.
//!
//! - `noop`: succeed at once.
//! - `record:FILE`: run for the number of milliseconds given in the payload
//!   (default 0), appending a line to FILE every 10 ms while the lease is
//!   valid: `TASK_ID TOKEN ATTEMPT KIND UNIX_NANOS` with KIND `start`,
//!   `tick` or `end`. The chaos and fencing tests read these lines to check
//!   that no two runs of a task overlap.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{TaskContext, TaskResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    Noop,
    Record(PathBuf),
}

impl std::str::FromStr for Builtin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "noop" => Ok(Builtin::Noop),
            Some(("record", path)) if !path.is_empty() => Ok(Builtin::Record(PathBuf::from(path))),
            _ => Err(format!("unknown builtin {s:?}: use noop or record:FILE")),
        }
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl Builtin {
    pub async fn run(&self, ctx: TaskContext) -> TaskResult {
        match self {
            Builtin::Noop => TaskResult::Success(Vec::new()),
            Builtin::Record(path) => record(path, ctx).await,
        }
    }
}

async fn record(path: &PathBuf, ctx: TaskContext) -> TaskResult {
    let ms: u64 = std::str::from_utf8(&ctx.payload).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) => return TaskResult::retry(format!("{}: {e}", path.display())),
    };
    let mut line = |kind: &str| -> std::io::Result<()> {
        // One write per line with O_APPEND: lines from several processes never interleave.
        let l = format!("{} {} {} {kind} {}\n", ctx.task_id, ctx.fencing_token, ctx.attempt, unix_nanos());
        file.write_all(l.as_bytes())
    };
    if let Err(e) = line("start") {
        return TaskResult::retry(e.to_string());
    }
    let end = tokio::time::Instant::now() + Duration::from_millis(ms);
    while tokio::time::Instant::now() < end {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return TaskResult::retry("cancelled"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        // The SDK stops polling this future once the lease lapses; checking
        // here as well keeps a tick from being written on a stale lease.
        if !ctx.lease_valid() {
            return TaskResult::retry("lease lapsed");
        }
        if let Err(e) = line("tick") {
            return TaskResult::retry(e.to_string());
        }
    }
    match line("end") {
        Ok(()) => TaskResult::Success(format!("{ms}").into_bytes()),
        Err(e) => TaskResult::retry(e.to_string()),
    }
}
