//! The `corrupt` fault: bytes flipped in a stopped node's write-ahead log or
//! table file, as a bad sector or a firmware bug does, then the recovery
//! path (`drover admin rejoin`). `cluster/faults.sh corrupt N` runs
//! `drover chaos corrupt` in a throwaway container with the node's volume;
//! [`inject`] drives the whole fault from the suite.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;

use super::{container_state, script, script_env, History};
use crate::cli::CliError;
use drover::client::Client;

#[derive(Args, Debug, Clone)]
pub struct CorruptArgs {
    /// The stopped node's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// What to damage: `wal` (the newest write-ahead log) or `sst` (the largest table file); the other if that has none.
    #[arg(long, default_value = "wal", value_parser = ["wal", "sst"])]
    pub target: String,
    /// How many bytes to flip, from the middle of the file.
    #[arg(long, default_value_t = 64)]
    pub bytes: usize,
}

/// The newest non-empty WAL file, or the largest table file.
fn pick(db: &Path, target: &str) -> Result<Option<PathBuf>, CliError> {
    let io = |e: std::io::Error| CliError(format!("{}: {e}", db.display()));
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if target == "wal" {
        let wal = drover::store::wal::files(db).map_err(io)?.into_iter().rev().find(|p| size(p) > 0);
        return Ok(wal);
    }
    let mut ssts: Vec<PathBuf> = std::fs::read_dir(db)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    ssts.sort_by_key(size);
    Ok(ssts.pop())
}

/// `drover chaos corrupt`: flip bytes in the middle of one file.
pub fn run(args: &CorruptArgs) -> Result<(), CliError> {
    let db = args.data_dir.join("db");
    if args.target == "sst" && pick(&db, "sst")?.is_none() {
        // A node that never restarted keeps everything in its WAL: open the
        // database once, as a restart does, and flush it into table files.
        let opened = drover::store::open_db(&db).map_err(|e| CliError(format!("{}: {e}", db.display())))?;
        for cf in [drover::store::keys::CF_SM, drover::store::keys::CF_LOG, drover::store::keys::CF_META] {
            if let Some(handle) = opened.cf_handle(cf) {
                opened.flush_cf(handle).map_err(|e| CliError(format!("flushing {cf}: {e}")))?;
            }
        }
    }
    let other = if args.target == "wal" { "sst" } else { "wal" };
    let file = match pick(&db, &args.target)? {
        Some(f) => f,
        None => {
            pick(&db, other)?.ok_or_else(|| CliError(format!("{}: no WAL or table file to damage", db.display())))?
        }
    };
    let mut bytes = std::fs::read(&file).map_err(|e| CliError(format!("{}: {e}", file.display())))?;
    let at = bytes.len() / 2;
    let n = args.bytes.min(bytes.len() - at);
    for b in &mut bytes[at..at + n] {
        *b ^= 0xff;
    }
    std::fs::write(&file, &bytes).map_err(|e| CliError(format!("{}: {e}", file.display())))?;
    println!("flipped {n} bytes at byte {at} of {} ({} bytes)", file.display(), bytes.len());
    Ok(())
}

/// The whole fault on a random node: damage its WAL (the run's 1st, 3rd,
/// ... corrupt fault) or a table file (2nd, 4th, ...) while it is stopped;
/// it must refuse to start (exit 65); `drover admin rejoin` brings it back
/// under a new id; wait until that id is a voter.
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    nth: usize,
    dir: &Path,
    client: &Client,
    nodes: u32,
    rng: &mut StdRng,
    admin_token: Option<&str>,
    history: &History,
) -> Result<u64, CliError> {
    let node = rng.gen_range(1..=u64::from(nodes));
    let target = if nth % 2 == 0 { "wal" } else { "sst" };
    let damaged = script(dir, "faults.sh", &["corrupt", &node.to_string(), target])?;
    println!("  fault: corrupt node {node}: {damaged}");
    history.log(json!({"event": "fault", "kind": "corrupt", "node": node, "target": target, "what": damaged}));
    script(dir, "faults.sh", &["start", &node.to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let state = container_state(node);
        if state.starts_with("exited") {
            break state;
        }
        if Instant::now() > deadline {
            return Err(CliError(format!(
                "chaos: FAIL: node {node} started from damaged data ({damaged}) and is still running ({state})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    history.log(json!({"event": "corrupt_refused", "node": node, "container": state}));
    if state != "exited 65" {
        return Err(CliError(format!("chaos: FAIL: node {node} with damaged data ended as {state:?}, not exited 65")));
    }
    println!("    node {node} refused to start (exit 65); rejoining it");
    let started = Instant::now();
    let env: Vec<(&str, &str)> = admin_token.map(|t| ("DROVER_TOKEN", t)).into_iter().collect();
    let rejoined = script_env(dir, "faults.sh", &["rejoin", &node.to_string()], &env)?;
    let addr = format!("172.28.0.1{node}:7000");
    let deadline = Instant::now() + Duration::from_secs(180);
    let new_id = loop {
        if let Ok(s) = client.cluster_status().await {
            let voters = s.members.iter().filter(|m| m.voter).count();
            let at_addr: Vec<_> = s.members.iter().filter(|m| m.addr == addr).collect();
            if let [m] = at_addr.as_slice() {
                if m.voter && voters == nodes as usize && m.id > u64::from(nodes) {
                    break m.id;
                }
            }
        }
        if Instant::now() > deadline {
            return Err(CliError(format!(
                "chaos: FAIL: node {node} did not become a voter again after rejoin ({rejoined})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = started.elapsed();
    println!("    {rejoined}; a voter as node {new_id} {:.1}s after rejoin", took.as_secs_f64());
    history.log(json!({"event": "rejoined", "node": node, "new_id": new_id, "took_ms": took.as_millis() as u64}));
    Ok(node)
}
