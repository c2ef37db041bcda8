//! `drover dev`: a local N-node cluster for development, as child processes
//! of this one (so a node can be killed on its own, as in the README's
//! walkthrough). Each node logs to `DATA_DIR/node-N.log`. Ctrl-C stops them
//! all gracefully; running `drover dev` again resumes from the data dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

use super::{shutdown_signal, CliError};
use crate::client::Client;
use crate::pb;

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
    /// Extra flags passed to every `drover server` (e.g. "--snapshot-every 1000").
    #[arg(long, allow_hyphen_values = true, value_name = "FLAGS")]
    pub server_flags: Option<String>,
}

struct DevNode {
    id: u64,
    addr: String,
    args: Vec<String>,
    child: Option<Child>,
}

fn node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

fn existing_nodes(root: &Path) -> u64 {
    (1..=9).take_while(|id| node_dir(root, *id).join("node_id").exists()).count() as u64
}

pub async fn run(args: &DevArgs) -> Result<(), CliError> {
    if !(1..=9).contains(&args.nodes) {
        return Err(CliError("--nodes must be between 1 and 9".into()));
    }
    if args.base_port as u64 + args.nodes > 65535 {
        return Err(CliError("--base-port is too high for that many nodes".into()));
    }
    let existing = existing_nodes(&args.data_dir);
    let fresh = existing == 0;
    if !fresh && existing != args.nodes {
        return Err(CliError(format!(
            "{} holds a {existing}-node cluster; run with --nodes {existing}, or use another --data-dir",
            args.data_dir.display()
        )));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| CliError(format!("{}: {e}", args.data_dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| CliError(format!("cannot find the drover binary: {e}")))?;
    let peers: Vec<(u64, String)> =
        (1..=args.nodes).map(|id| (id, format!("127.0.0.1:{}", args.base_port as u64 + id - 1))).collect();
    let peer_list = peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
    let extra: Vec<String> = args.server_flags.as_deref().unwrap_or("").split_whitespace().map(String::from).collect();

    let mut nodes = Vec::new();
    for (id, addr) in &peers {
        let dir = node_dir(&args.data_dir, *id);
        let mut a = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--peers".into(),
            peer_list.clone(),
            // Dev convenience: unknown callbacks are registered with defaults.
            "--auto-register".into(),
        ];
        // Only a brand-new dev cluster bootstraps, and only from node 1.
        if fresh && *id == 1 {
            a.push("--bootstrap".into());
        }
        a.extend(extra.iter().cloned());
        nodes.push(DevNode { id: *id, addr: addr.clone(), args: a, child: None });
    }
    for node in &mut nodes {
        node.child = Some(spawn(&exe, &args.data_dir, node)?);
    }

    let client = Client::new(peers.iter().map(|(_, a)| a.clone()).collect());
    let status = settled_status(&client).await;
    match status {
        Ok(s) => {
            println!("drover dev cluster: {} node(s), data in {}", args.nodes, args.data_dir.display());
            for n in &nodes {
                let pid = n.child.as_ref().and_then(|c| c.id()).unwrap_or(0);
                let lead = if n.id == s.leader_id { "  (leader)" } else { "" };
                println!(
                    "  node {}  {}  pid {}  log {}{}",
                    n.id,
                    n.addr,
                    pid,
                    args.data_dir.join(format!("node-{}.log", n.id)).display(),
                    lead
                );
            }
            println!("leader: node {} (term {})", s.leader_id, s.term);
            let eps = peers.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(",");
            println!("export DROVER_ENDPOINT={eps}");
            println!("Ctrl-C stops the cluster; run `drover dev` again to resume it.");
        }
        Err(e) => {
            eprintln!("warning: the cluster has not elected a leader yet ({}); see the node logs", e.message());
        }
    }

    let mut stopping = false;
    while !stopping {
        tokio::select! {
            _ = shutdown_signal() => stopping = true,
            (id, status) = wait_any(&mut nodes) => {
                let node = nodes.iter().find(|n| n.id == id);
                eprintln!("node {id} exited ({status}); restart it with:");
                if let Some(n) = node {
                    let args: Vec<&str> = n.args.iter().map(String::as_str).filter(|a| *a != "--bootstrap").collect();
                    eprintln!("  {} {}", exe.display(), args.join(" "));
                }
                if nodes.iter().all(|n| n.child.is_none()) {
                    return Err(CliError("every node has exited".into()));
                }
            }
        }
    }
    println!("stopping {} node(s)...", nodes.iter().filter(|n| n.child.is_some()).count());
    for n in &mut nodes {
        if let Some(child) = &n.child {
            if let Some(pid) = child.id() {
                // SAFETY: sending a signal to our own child process.
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
    }
    for n in &mut nodes {
        if let Some(child) = n.child.as_mut() {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
    println!("stopped");
    Ok(())
}

/// The cluster's status once every reachable member agrees on the leader
/// and term (a restarted node may briefly still believe in an old term).
async fn settled_status(client: &Client) -> Result<pb::ClusterStatusResponse, tonic::Status> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = client
            .call_idempotent(0, |i| async move {
                Ok(client.cluster(i)?.status(pb::ClusterStatusRequest {}).await?.into_inner())
            })
            .await?;
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

fn spawn(exe: &Path, root: &Path, node: &DevNode) -> Result<Child, CliError> {
    let log_path = root.join(format!("node-{}.log", node.id));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError(format!("{}: {e}", log_path.display())))?;
    let err = log.try_clone().map_err(|e| CliError(e.to_string()))?;
    Command::new(exe)
        .args(&node.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError(format!("starting node {}: {e}", node.id)))
}

/// Wait for any running child to exit; returns its id and exit status.
async fn wait_any(nodes: &mut [DevNode]) -> (u64, String) {
    loop {
        for n in nodes.iter_mut() {
            if let Some(child) = n.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    n.child = None;
                    return (n.id, status.to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
