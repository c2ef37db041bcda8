//! `drover admin rejoin --data-dir DIR`: the operator's one command for a
//! node whose data is damaged (README, "When a disk fills or fails").
//!
//! 1. The node must be stopped (nothing holds `DIR/db`), and its data dir
//!    must fail `admin check` (or `--force`).
//! 2. The cluster replaces it (`Cluster.ReplaceNode`): its id is retired,
//!    a new id joins as a learner at its address.
//! 3. The damaged files move into `DIR/damaged-TIME/`, and `DIR` is claimed
//!    by the new id ([`drover::node::rejoin::prepare`]).
//!
//! Each step can be repeated: the cluster answers a repeated request with
//! the same new id, and a prepared data dir is left as it is.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{failed, Cli, CliError};
use drover::node::rejoin;

pub async fn run(cli: &Cli, dir: &Path, id: Option<u64>, force: bool, wait: Option<Duration>) -> Result<(), CliError> {
    let shown = dir.display();
    let old = match id {
        Some(id) => id,
        None => {
            let file = dir.join("node_id");
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError(format!("{}: {e}; give the damaged node's id with --id", file.display())))?;
            text.trim().parse().map_err(|_| {
                CliError(format!("{} does not hold a node id; give the damaged node's id with --id", file.display()))
            })?
        }
    };
    if rejoin::in_use(dir).map_err(|e| CliError(format!("{shown}: {e}")))? {
        return Err(CliError(format!("a running process holds {shown}/db: stop node {old} first")));
    }
    if let Some(r) = rejoin::marker(dir).map_err(|e| CliError(e.to_string()))? {
        // A repeat: the cluster answered and the dir was prepared, and the
        // node has not started from it since (then it could be damaged
        // again, and rejoin once more).
        if (r.id == old || r.replaces == old) && !dir.join("db").exists() {
            return done(cli, dir, r.replaces, r.id, None, "", wait).await;
        }
    }
    match drover::raft::check::verify_offline(dir) {
        Ok(_) if !force => {
            return Err(CliError(format!(
                "{shown} passes `drover admin check` (no damage found): rejoin rebuilds a node whose data is damaged; add --force to rebuild it anyway"
            )))
        }
        Ok(_) => eprintln!("{shown}: no damage found; rebuilding it anyway (--force)"),
        Err(e) => eprintln!("{shown}: {}", e.what),
    }
    let client = cli.client()?;
    let r = client.replace_node(old).await.map_err(failed)?;
    let aside = rejoin::prepare(dir, old, r.new_id)
        .map_err(|e| CliError(format!("{shown}: {e} (the cluster expects node {} now: run this again)", r.new_id)))?;
    done(cli, dir, old, r.new_id, aside.as_deref(), &r.addr, wait).await
}

async fn done(
    cli: &Cli,
    dir: &Path,
    old: u64,
    new: u64,
    aside: Option<&Path>,
    addr: &str,
    wait: Option<Duration>,
) -> Result<(), CliError> {
    if cli.json && wait.is_none() {
        println!("{}", json!({ "data_dir": dir, "old_id": old, "new_id": new, "addr": addr, "moved_to": aside }));
    } else if !cli.json {
        if let Some(a) = aside {
            println!("node {old}'s damaged files moved to {}", a.display());
        }
        println!(
            "{} now belongs to node {new}, which replaces node {old} (retired: it never votes again).\n\
             Start the node again with its usual command (--id {old} or --id {new}): it starts empty, catches up \
             from the others as a learner, and becomes a voter in node {old}'s place. Watch: drover cluster status",
            dir.display()
        );
    }
    let Some(timeout) = wait else { return Ok(()) };
    let client = cli.client()?;
    let give_up = tokio::time::Instant::now() + timeout;
    let mut progress = super::progress::Progress::new("catching up (entries applied)", None, "entries", cli.json);
    loop {
        let s = client.cluster_status().await.map_err(failed)?;
        let voter = |id: u64| s.members.iter().any(|m| m.id == id && m.voter);
        if voter(new) && !s.members.iter().any(|m| m.id == old) {
            break;
        }
        if let Some(m) = s.members.iter().find(|m| m.id == new) {
            progress.set(m.status.as_ref().map_or(0, |st| st.applied_index), Some(s.committed_index));
        }
        if tokio::time::Instant::now() > give_up {
            return Err(CliError(format!(
                "node {new} is not a voter yet after {}: is it running? (drover cluster status)",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    progress.finish();
    if cli.json {
        println!(
            "{}",
            json!({ "data_dir": dir, "old_id": old, "new_id": new, "addr": addr, "moved_to": aside, "voter": true })
        );
    } else {
        println!("node {new} is a voter in node {old}'s place");
    }
    Ok(())
}
