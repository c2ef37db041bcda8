//! `drover cluster ...`: inspect the cluster.

use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::{failed, Cli, CliError};
use drover::pb;

/// A leader without quorum acknowledgement for this long gets a warning.
const STALE_QUORUM_MS: u64 = 2000;

/// A member this far behind the leader's log gets a warning.
const FAR_BEHIND: u64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index, and each node's lag.
    Status,
    /// The workers connected to the leader: callbacks, credits, running tasks.
    Workers,
    /// Add a node: as a learner first, then, once it has caught up, as a voter.
    #[command(after_help = "Start the new node first, with a new id and an empty data dir:\n  \
        drover server --id 4 --listen 10.0.0.4:7000 --data-dir /var/lib/drover\n\
        then:\n  drover cluster add-node --id 4 --addr 10.0.0.4:7000")]
    AddNode {
        /// The new node's id (never one a removed node had).
        #[arg(long)]
        id: u64,
        /// The address it listens on, as the other nodes reach it.
        #[arg(long)]
        addr: String,
        /// Leave it a learner (no vote).
        #[arg(long)]
        no_promote: bool,
        /// Give up waiting for it to catch up after this long.
        #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
        timeout: Duration,
    },
    /// Remove a member (the leader too). Its id can never be used again.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Make another voter the leader.
    TransferLeader {
        #[arg(long)]
        to: u64,
    },
    /// Each member's version and feature level, the cluster's active level,
    /// and what each level adds.
    Version,
    /// After a rolling upgrade: turn on the new release's features.
    #[command(after_help = "Upgrade every node first (README, \"Upgrading\"). Until the finalize, any node may go \
        back to the previous release; after it, none can.")]
    Upgrade {
        /// Raise the cluster's feature level to the highest every member
        /// speaks (refused, naming the members behind, until each does).
        #[arg(long, required = true)]
        finalize: bool,
        /// Raise to this level instead of the highest.
        #[arg(long)]
        level: Option<u32>,
    },
}

pub async fn run(cli: &Cli, cmd: &ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Status => status(cli).await,
        ClusterCommand::Workers => workers(cli).await,
        ClusterCommand::AddNode { id, addr, no_promote, timeout } => {
            add_node(cli, *id, addr, *no_promote, *timeout).await
        }
        ClusterCommand::RemoveNode { id } => {
            let r = cli.client()?.remove_node(*id).await.map_err(failed)?;
            print_membership(cli.json, &format!("removed node {id}"), &r);
            Ok(())
        }
        ClusterCommand::TransferLeader { to } => {
            let r = cli.client()?.transfer_leader(*to).await.map_err(failed)?;
            print_membership(cli.json, &format!("node {to} leads"), &r);
            Ok(())
        }
        ClusterCommand::Version => version(cli).await,
        ClusterCommand::Upgrade { finalize: _, level } => {
            let r = cli.client()?.finalize_upgrade(level.unwrap_or(0)).await.map_err(failed)?;
            if cli.json {
                println!(
                    "{}",
                    json!({ "active_feature_level": r.active_feature_level, "previous_feature_level": r.previous_feature_level })
                );
            } else if r.active_feature_level == r.previous_feature_level {
                println!("the cluster already runs at feature level {}", r.active_feature_level);
            } else {
                println!(
                    "feature level {} -> {}: the new features are on; no node can go back to an older release now",
                    r.previous_feature_level, r.active_feature_level
                );
            }
            Ok(())
        }
    }
}

/// `cluster version`: members' versions and levels, the active level.
async fn version(cli: &Cli) -> Result<(), CliError> {
    use drover::domain::feature::{LEVELS, SUPPORTED};
    let s = cli.client()?.cluster_status().await.map_err(failed)?;
    let active = s.active_feature_level.max(1);
    let lowest = s.members.iter().map(|m| m.feature_level).min().unwrap_or(0);
    if cli.json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| json!({ "id": m.id, "addr": m.addr, "version": m.version, "feature_level": m.feature_level, "reachable": m.reachable }))
            .collect();
        let levels: Vec<_> =
            LEVELS.iter().map(|(l, r, what)| json!({ "level": l, "release": r, "adds": what })).collect();
        println!(
            "{}",
            json!({
                "active_feature_level": active, "leader_id": s.leader_id, "members": members,
                "this_binary": { "version": drover::raft::versions::VERSION, "feature_level": SUPPORTED },
                "finalize_possible": lowest > active, "levels": levels,
            })
        );
        return Ok(());
    }
    println!("active feature level: {active}   leader: node {}", s.leader_id);
    println!("{:<4} {:<22} {:<34} {:>5}", "ID", "ADDRESS", "VERSION", "LEVEL");
    for m in &s.members {
        let version = if m.version.is_empty() { "?" } else { m.version.as_str() };
        let level = if m.feature_level == 0 { "?".to_string() } else { m.feature_level.to_string() };
        println!("{:<4} {:<22} {:<34} {:>5}", m.id, m.addr, version, level);
    }
    if lowest > active {
        println!("every member speaks level {lowest}: run `drover cluster upgrade --finalize` to turn it on (no going back after)");
    }
    for (l, release, what) in LEVELS {
        println!("level {l} ({release}): {what}");
    }
    Ok(())
}

fn print_membership(json_out: bool, what: &str, r: &pb::MembershipResponse) {
    if json_out {
        println!("{}", json!({ "voters": r.voters, "learners": r.learners, "leader_id": r.leader_id }));
    } else {
        println!("{what}; voters {:?}, learners {:?}, leader {}", r.voters, r.learners, r.leader_id);
    }
}

async fn add_node(cli: &Cli, id: u64, addr: &str, no_promote: bool, timeout: Duration) -> Result<(), CliError> {
    let client = cli.client()?;
    client.add_learner(id, addr.to_string()).await.map_err(failed)?;
    eprintln!("node {id} added as a learner; waiting for it to catch up");
    let give_up = tokio::time::Instant::now() + timeout;
    let mut progress = super::progress::Progress::new("catching up (entries applied)", None, "entries", cli.json);
    loop {
        let s = client.cluster_status().await.map_err(failed)?;
        let member = s.members.iter().find(|m| m.id == id);
        let lag = member.and_then(|m| m.lag);
        match (member, lag) {
            (Some(m), Some(lag)) if m.reachable && lag <= CAUGHT_UP => break,
            (Some(m), _) => progress.set(m.status.as_ref().map_or(0, |st| st.applied_index), Some(s.committed_index)),
            (None, _) => return Err(CliError(format!("node {id} is no longer a member (removed concurrently?)"))),
        }
        if tokio::time::Instant::now() > give_up {
            return Err(CliError(format!(
                "node {id} did not catch up within {}; it stays a learner (run add-node again to retry)",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    progress.finish();
    if no_promote {
        println!("node {id} is a learner and has caught up");
        return Ok(());
    }
    let r = client.promote_voter(id).await.map_err(failed)?;
    print_membership(cli.json, &format!("node {id} is a voter"), &r);
    Ok(())
}

async fn workers(cli: &Cli) -> Result<(), CliError> {
    let r = cli.client()?.list_workers().await.map_err(failed)?;
    if cli.json {
        let workers: Vec<_> = r
            .workers
            .iter()
            .map(|w| {
                let callbacks: Vec<_> = w
                    .callbacks
                    .iter()
                    .map(|c| json!({ "callback": c.callback, "credits": c.credits, "running": c.running }))
                    .collect();
                json!({ "worker_id": w.worker_id, "callbacks": callbacks, "draining": w.draining, "idle_ms": w.idle_ms })
            })
            .collect();
        println!("{}", json!({ "workers": workers }));
        return Ok(());
    }
    println!("{:<32} {:<24} {:>7} {:>7}  STATE", "WORKER", "CALLBACK", "CREDITS", "RUNNING");
    for w in &r.workers {
        let state = if w.draining { "draining" } else { "active" };
        for c in &w.callbacks {
            println!("{:<32} {:<24} {:>7} {:>7}  {state}", w.worker_id, c.callback, c.credits, c.running.len());
        }
    }
    if r.workers.is_empty() {
        println!("(no workers connected)");
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    drover::consensus::disk::human(b)
}

/// A clock offset for people: "+3ms", "-1.2s", "+1h0m".
fn format_offset(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let a = ms.unsigned_abs();
    match a {
        0..=9_999 => format!("{sign}{a}ms"),
        10_000..=3_599_999 => format!("{sign}{:.1}s", a as f64 / 1000.0),
        _ => format!("{sign}{}h{}m", a / 3_600_000, (a % 3_600_000) / 60_000),
    }
}

/// A learner this close to the leader's log counts as caught up.
const CAUGHT_UP: u64 = 100;

async fn status(cli: &Cli) -> Result<(), CliError> {
    let s = cli.client()?.cluster_status().await.map_err(failed)?;
    if cli.json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| {
                let st = m.status.clone().unwrap_or_default();
                json!({
                    "id": m.id, "addr": m.addr, "voter": m.voter, "reachable": m.reachable,
                    "role": if m.reachable { st.role.as_str() } else { "unreachable" },
                    "term": st.term, "last_log_index": st.last_log_index,
                    "committed_index": st.committed_index, "applied_index": st.applied_index,
                    "snapshot_index": st.snapshot_index, "purged_index": st.purged_index,
                    "tasks": st.task_count, "lag": m.lag, "last_contact_ms": m.last_contact_ms,
                    "clock_offset_ms": if m.reachable { st.clock_offset_ms } else { None },
                    "clock_skewed": m.reachable && st.clock_skewed,
                    "disk_free_bytes": if m.reachable { Some(st.disk_free_bytes) } else { None },
                    "disk_total_bytes": if m.reachable { Some(st.disk_total_bytes) } else { None },
                    "disk_alarm": m.reachable && st.disk_alarm,
                    "tls": m.reachable && st.tls,
                    "insecure_exposed": m.reachable && st.insecure_exposed,
                    "cluster_id": if m.reachable { Some(st.cluster_id.as_str()) } else { None },
                    "version": m.version, "feature_level": m.feature_level,
                    "error": if m.error.is_empty() { None } else { Some(&m.error) },
                })
            })
            .collect();
        let v = json!({
            "cluster_id": s.cluster_id, "active_feature_level": s.active_feature_level.max(1),
            "leader_id": s.leader_id, "term": s.term, "last_log_index": s.last_log_index, "quorum_ack_ms": s.quorum_ack_ms,
            "committed_index": s.committed_index, "members": members,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "cluster: {}   feature level: {}   leader: node {}   term: {}   commit: {}   last log: {}",
        if s.cluster_id.is_empty() { "(no ID yet)" } else { s.cluster_id.as_str() },
        s.active_feature_level.max(1),
        s.leader_id,
        s.term,
        s.committed_index,
        s.last_log_index
    );
    println!(
        "{:<4} {:<22} {:<8} {:<11} {:>6} {:>10} {:>10} {:>8} {:>9} {:>10} {:>10}  VERSION (LEVEL)",
        "ID", "ADDRESS", "VOTER", "ROLE", "TERM", "COMMITTED", "APPLIED", "LAG", "CONTACT", "CLOCK", "DISK FREE"
    );
    let mut warnings = Vec::new();
    for m in &s.members {
        let st = m.status.clone().unwrap_or_default();
        let role = if m.reachable { st.role.clone() } else { "unreachable".into() };
        let known = |v: u64| if m.reachable { v.to_string() } else { "-".into() };
        let lag = m.lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into());
        let contact = m.last_contact_ms.map(|ms| format!("{ms}ms")).unwrap_or_else(|| "-".into());
        let clock = match st.clock_offset_ms.filter(|_| m.reachable) {
            Some(ms) => format_offset(ms),
            None => "?".into(),
        };
        let disk = if m.reachable {
            format!("{}{}", human_bytes(st.disk_free_bytes), if st.disk_alarm { "!" } else { "" })
        } else {
            "?".into()
        };
        let version =
            if m.version.is_empty() { "?".to_string() } else { format!("{} ({})", m.version, m.feature_level) };
        println!(
            "{:<4} {:<22} {:<8} {:<11} {:>6} {:>10} {:>10} {:>8} {:>9} {:>10} {:>10}  {version}",
            m.id,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            role,
            known(st.term),
            known(st.committed_index),
            known(st.applied_index),
            lag,
            contact,
            clock,
            disk
        );
        if !m.reachable {
            warnings.push(format!("node {} at {} is unreachable: {}", m.id, m.addr, m.error));
        } else if !m.error.is_empty() {
            warnings.push(m.error.clone());
        } else if let Some(lag) = m.lag.filter(|l| *l > FAR_BEHIND) {
            warnings.push(format!("node {} is {lag} entries behind the leader", m.id));
        }
        if m.reachable && st.disk_alarm {
            warnings.push(format!(
                "node {} is short of disk space ({} free, --min-free-disk {}): the cluster refuses new tasks until space is freed",
                m.id,
                human_bytes(st.disk_free_bytes),
                human_bytes(st.min_free_disk_bytes)
            ));
        }
        if m.reachable && st.insecure_exposed {
            warnings.push(format!(
                "node {} serves PLAINTEXT on {} (--insecure): anyone who can reach it can call any API, the Raft service included",
                m.id, m.addr
            ));
        }
        if m.reachable && st.clock_skewed {
            warnings.push(format!(
                "node {}'s wall clock is {} off the cluster's median (bound {}ms): it does not lead; fix its time source (NTP)",
                m.id,
                st.clock_offset_ms.map(format_offset).unwrap_or_default(),
                st.max_clock_offset_ms
            ));
        }
    }
    if let Some(ms) = s.quorum_ack_ms.filter(|ms| *ms > STALE_QUORUM_MS) {
        warnings.push(format!(
            "node {} has not heard from a quorum for {:.1}s: it may be cut off, and another leader may exist",
            s.leader_id,
            ms as f64 / 1000.0
        ));
    }
    for w in warnings {
        println!("warning: {w}");
    }
    Ok(())
}
