//! `drover cluster ...`: inspect the cluster.

use clap::Subcommand;
use serde_json::json;

use super::{status_message, Cli, CliError};
use crate::pb;

/// A member this far behind the leader's log gets a warning.
const FAR_BEHIND: u64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index, and each node's lag.
    Status,
}

pub async fn run(cli: &Cli, cmd: &ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Status => status(cli).await,
    }
}

async fn status(cli: &Cli) -> Result<(), CliError> {
    let client = cli.client();
    let s = client
        .call(0, |i| {
            let client = &client;
            async move { Ok(client.cluster(i)?.status(pb::ClusterStatusRequest {}).await?.into_inner()) }
        })
        .await
        .map_err(|s| CliError(status_message(&s)))?;
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
                    "error": if m.error.is_empty() { None } else { Some(&m.error) },
                })
            })
            .collect();
        let v = json!({
            "leader_id": s.leader_id, "term": s.term, "last_log_index": s.last_log_index,
            "committed_index": s.committed_index, "members": members,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "leader: node {}   term: {}   commit: {}   last log: {}",
        s.leader_id, s.term, s.committed_index, s.last_log_index
    );
    println!(
        "{:<4} {:<22} {:<8} {:<11} {:>6} {:>10} {:>10} {:>8} {:>9}",
        "ID", "ADDRESS", "VOTER", "ROLE", "TERM", "COMMITTED", "APPLIED", "LAG", "CONTACT"
    );
    let mut warnings = Vec::new();
    for m in &s.members {
        let st = m.status.clone().unwrap_or_default();
        let role = if m.reachable { st.role.clone() } else { "unreachable".into() };
        let known = |v: u64| if m.reachable { v.to_string() } else { "-".into() };
        let lag = m.lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into());
        let contact = m.last_contact_ms.map(|ms| format!("{ms}ms")).unwrap_or_else(|| "-".into());
        println!(
            "{:<4} {:<22} {:<8} {:<11} {:>6} {:>10} {:>10} {:>8} {:>9}",
            m.id,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            role,
            known(st.term),
            known(st.committed_index),
            known(st.applied_index),
            lag,
            contact
        );
        if !m.reachable {
            warnings.push(format!("node {} at {} is unreachable: {}", m.id, m.addr, m.error));
        } else if let Some(lag) = m.lag.filter(|l| *l > FAR_BEHIND) {
            warnings.push(format!("node {} is {lag} entries behind the leader", m.id));
        }
    }
    for w in warnings {
        println!("warning: {w}");
    }
    Ok(())
}
