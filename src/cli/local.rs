//! A throwaway local cluster of `drover server` child processes, for
//! `drover bench --local`: free loopback ports, a temp data dir removed on
//! drop, SIGKILL / restart per node.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::CliError;
use crate::client::Client;
use crate::pb;

pub struct LocalNode {
    pub id: u64,
    pub addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    root: PathBuf,
    exe: PathBuf,
    pub nodes: Vec<LocalNode>,
    extra: Vec<String>,
}

fn free_port() -> Result<u16, CliError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| CliError(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| CliError(e.to_string()))?.port())
}

impl LocalCluster {
    /// Start `n` nodes (node 1 bootstraps) and wait for a leader.
    pub async fn start(n: u64, extra: &[&str]) -> Result<LocalCluster, CliError> {
        let exe = std::env::current_exe().map_err(|e| CliError(format!("cannot find the drover binary: {e}")))?;
        let root =
            std::env::temp_dir().join(format!("drover-local-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&root).map_err(|e| CliError(format!("{}: {e}", root.display())))?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(LocalNode {
                id,
                addr: format!("127.0.0.1:{}", free_port()?),
                data_dir: root.join(format!("node-{id}")),
                child: None,
            });
        }
        let mut c = LocalCluster { root, exe, nodes, extra: extra.iter().map(|s| s.to_string()).collect() };
        let peers = c.nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        for id in 1..=n {
            let mut args = vec!["--peers".to_string(), peers.clone()];
            if id == 1 {
                args.push("--bootstrap".into());
            }
            c.spawn(id, &args)?;
        }
        c.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn spawn(&mut self, id: u64, args: &[String]) -> Result<(), CliError> {
        let node = &mut self.nodes[(id - 1) as usize];
        let log_path = self.root.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| CliError(e.to_string()))?;
        let err = log.try_clone().map_err(|e| CliError(e.to_string()))?;
        let child = Command::new(&self.exe)
            .args(["server", "--id", &id.to_string(), "--listen", &node.addr, "--data-dir"])
            .arg(&node.data_dir)
            .args(args)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError(format!("starting node {id}: {e}")))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL node `id`.
    pub async fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes[(id - 1) as usize].child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM every node and wait for them to exit.
    pub async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(pid) = n.child.as_ref().and_then(|c| c.id()) {
                // SAFETY: signalling our own child.
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                if tokio::time::timeout(Duration::from_secs(15), c.wait()).await.is_err() {
                    let _ = c.kill().await;
                }
            }
        }
    }

    /// Start a stopped node again (id, listen and data dir only).
    pub fn restart(&mut self, id: u64) -> Result<(), CliError> {
        self.spawn(id, &[])
    }

    /// The node that reports itself leader.
    pub async fn leader(&self) -> Option<u64> {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let client = Client::new(vec![n.addr.clone()]);
            let Ok(mut c) = client.cluster(0) else { continue };
            let req = pb::NodeStatusRequest {};
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.node_status(req)).await {
                if s.get_ref().role == "leader" {
                    return Some(n.id);
                }
            }
        }
        None
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, CliError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(id) = self.leader().await {
                return Ok(id);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CliError(format!(
                    "the local cluster elected no leader within {timeout:?}; logs in {}",
                    self.root.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
