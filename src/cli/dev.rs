//! `drover dev`: a local N-node cluster for development, as child processes
//! of this one (so a node can be killed on its own, as in the README's
//! walkthrough). Each node logs to `DATA_DIR/node-N.log`. Ctrl-C stops them
//! all gracefully; running `drover dev` again resumes from the data dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::testkit::{LocalCluster, Spec};
use clap::Args;
use drover::client::Client;
use drover::pb;

use super::{shutdown_signal, CliError};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of node 1; node N listens on BASE+N-1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Where the nodes keep their data (one sub-directory per node).
    #[arg(long, default_value = ".drover-dev")]
    pub data_dir: PathBuf,
    /// Port of node 1's HTTP endpoint (/metrics, /healthz, /readyz); node N serves on BASE+N-1. 0: off.
    #[arg(long, default_value_t = 8001)]
    pub http_base_port: u16,
    /// Serve TLS: make a throwaway CA and certificates under DATA_DIR/tls (kept for the next run) and print how to point the CLI at them.
    #[arg(long)]
    pub tls: bool,
    /// Extra flags passed to every `drover server` (e.g. "--snapshot-every 1000").
    #[arg(long, allow_hyphen_values = true, value_name = "FLAGS")]
    pub server_flags: Option<String>,
}

fn existing_nodes(root: &Path) -> u64 {
    (1..=9).take_while(|id| root.join(format!("node-{id}")).join("node_id").exists()).count() as u64
}

pub async fn run(args: &DevArgs) -> Result<(), CliError> {
    if !(1..=9).contains(&args.nodes) {
        return Err(CliError("--nodes must be between 1 and 9".into()));
    }
    if args.http_base_port as u64 + args.nodes > 65535 {
        return Err(CliError("--http-base-port is too high for that many nodes".into()));
    }
    if args.base_port as u64 + args.nodes > 65535 {
        return Err(CliError("--base-port is too high for that many nodes".into()));
    }
    let existing = existing_nodes(&args.data_dir);
    if existing != 0 && existing != args.nodes {
        return Err(CliError(format!(
            "{} holds a {existing}-node cluster; run with --nodes {existing}, or use another --data-dir",
            args.data_dir.display()
        )));
    }
    let exe = std::env::current_exe().map_err(|e| CliError(format!("cannot find the drover binary: {e}")))?;
    let mut spec = Spec::new(args.nodes, exe).flags(&["--auto-register"]);
    spec.flags.extend(args.server_flags.as_deref().unwrap_or("").split_whitespace().map(String::from));
    spec.data_dir = Some(args.data_dir.clone());
    spec.base_port = Some(args.base_port);
    spec.http_base_port = (args.http_base_port != 0).then_some(args.http_base_port);
    spec.log_filter = "info,openraft=error".into();
    if args.tls {
        let dir = args.data_dir.join("tls");
        spec.tls = Some(match drover::tls::certs::Bundle::existing(&dir, args.nodes) {
            Some(b) => b,
            None => drover::tls::certs::write_bundle(
                &dir,
                &(1..=args.nodes).collect::<Vec<_>>(),
                &[],
                Duration::from_secs(365 * 86_400),
            )
            .map_err(|e| CliError(e.to_string()))?,
        });
    }
    let tls = spec.tls.clone();
    let mut cluster = LocalCluster::spawn_all(spec)?;

    let client = cluster.client();
    match settled_status(&client).await {
        Ok(s) => {
            println!("drover dev cluster: {} node(s), data in {}", args.nodes, args.data_dir.display());
            for n in &cluster.nodes {
                let lead = if n.id == s.leader_id { "  (leader)" } else { "" };
                let pid = n.pid().unwrap_or(0);
                println!("  node {}  {}  pid {}  log {}{}", n.id, n.addr, pid, n.log.display(), lead);
            }
            println!("leader: node {} (term {})", s.leader_id, s.term);
            println!("export DROVER_ENDPOINT={}", cluster.endpoints().join(","));
            if let Some(b) = &tls {
                println!(
                    "TLS is on (certificates in {}); point the CLI at them with:",
                    args.data_dir.join("tls").display()
                );
                println!(
                    "export DROVER_CA={} DROVER_CERT={} DROVER_KEY={}",
                    abs(&b.ca).display(),
                    abs(&b.client_cert).display(),
                    abs(&b.client_key).display()
                );
                println!(
                    "To try auth: export DROVER_TOKEN=$(drover auth token create --role admin --note dev) && drover auth enable"
                );
            }
            for n in cluster.nodes.iter().filter(|n| n.http_addr.is_some()) {
                let http = n.http_addr.as_deref().unwrap_or_default();
                let scheme = if tls.is_some() { "https" } else { "http" };
                println!("  node {} console: {scheme}://{http}/  metrics: {scheme}://{http}/metrics  (health: /healthz, /readyz)", n.id);
            }
            println!("Ctrl-C stops the cluster; run `drover dev` again to resume it.");
        }
        Err(e) => {
            eprintln!("warning: the cluster has not elected a leader yet ({}); see the node logs", e.message());
        }
    }

    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                for (id, status) in cluster.exited() {
                    eprintln!("node {id} exited ({status}); restart it with:");
                    eprintln!("  {}", cluster.command_line(id));
                }
                if cluster.nodes.iter().all(|n| !n.is_running()) {
                    return Err(CliError("every node has exited".into()));
                }
            }
        }
    }
    println!("stopping {} node(s)...", cluster.nodes.iter().filter(|n| n.is_running()).count());
    cluster.stop_all().await?;
    println!("stopped");
    Ok(())
}

/// The cluster's status once every reachable member agrees on the leader
/// and term (a restarted node may briefly still believe in an old term).
async fn settled_status(client: &Client) -> Result<pb::ClusterStatusResponse, tonic::Status> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = client.cluster_status().await?;
        let agreed = s
            .members
            .iter()
            .filter_map(|m| m.status.as_ref())
            .all(|st| st.has_leader && st.leader_id == s.leader_id && st.term == s.term);
        if agreed || tokio::time::Instant::now() > give_up {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `p` made absolute (for an `export` line that works from any directory).
fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
