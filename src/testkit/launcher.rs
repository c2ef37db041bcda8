//! The one local-cluster launcher: `drover server` child processes on
//! loopback, each with its own data dir and log file. Used by `drover dev`,
//! `drover bench --local` and the integration tests.
//!
//! It picks free ports (or consecutive ones from a base), bootstraps a new
//! cluster from node 1, waits for a leader, and kills (SIGKILL), stops
//! (SIGTERM), pauses (SIGSTOP), resumes and restarts nodes.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use drover::client::Client;
use drover::pb;

/// Why a local cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Io(String),
    #[error("no leader among the running nodes within {0:?}; see the node logs")]
    NoLeader(Duration),
    #[error("node {id} did not stop within {waited:?} of SIGTERM")]
    StuckOnStop { id: u64, waited: Duration },
}

/// Where the nodes keep their data.
enum Root {
    /// Removed when the cluster is dropped.
    Temp(tempfile::TempDir),
    /// Kept (a `drover dev` cluster resumes from it).
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    pub nodes: u64,
    /// The `drover` binary to run.
    pub binary: PathBuf,
    /// Another binary for some nodes (a rolling upgrade runs two releases).
    pub binaries: HashMap<u64, PathBuf>,
    /// Flags for every `drover server`.
    pub flags: Vec<String>,
    /// Extra environment per node id (e.g. libfaketime for a wrong clock).
    pub env: HashMap<u64, Vec<(String, String)>>,
    /// Keep the data here (resuming a cluster already in it); default: a
    /// temporary dir removed on drop.
    pub data_dir: Option<PathBuf>,
    /// Node N listens on BASE+N-1; default: free ports.
    pub base_port: Option<u16>,
    /// Node N listens on this address (over `base_port`): a cluster on
    /// the addresses of another one, as when hosts are reused.
    pub addrs: HashMap<u64, String>,
    /// A node's data dir elsewhere than under the root (e.g. on a small
    /// filesystem of its own).
    pub node_dirs: HashMap<u64, PathBuf>,
    /// `RUST_LOG` for the nodes.
    pub log_filter: String,
    /// Serve each node's HTTP endpoint (`--http-listen`): node N on
    /// `Some(BASE)`+N-1, or on a free port with `Some(0)`; off with `None`.
    pub http_base_port: Option<u16>,
    /// Serve TLS with these certificates (node N with `node-N.pem`,
    /// authenticating peers), and connect clients with the client pair.
    pub tls: Option<drover::tls::certs::Bundle>,
}

impl Spec {
    pub fn new(nodes: u64, binary: impl Into<PathBuf>) -> Spec {
        Spec {
            nodes,
            binary: binary.into(),
            binaries: HashMap::new(),
            flags: Vec::new(),
            env: HashMap::new(),
            data_dir: None,
            base_port: None,
            addrs: HashMap::new(),
            node_dirs: HashMap::new(),
            log_filter: "info".into(),
            http_base_port: None,
            tls: None,
        }
    }

    pub fn flags(mut self, flags: &[&str]) -> Spec {
        self.flags.extend(flags.iter().map(|s| s.to_string()));
        self
    }
}

pub struct LocalNode {
    pub id: u64,
    pub addr: String,
    /// Its HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), if served.
    pub http_addr: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct LocalCluster {
    root: Root,
    spec: Spec,
    pub nodes: Vec<LocalNode>,
}

/// A free loopback port (bound then released; the OS does not hand it out
/// again right away).
pub fn free_port() -> Result<u16, LaunchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| LaunchError::Io(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| LaunchError::Io(e.to_string()))?.port())
}

fn signal(child: &Child, sig: Signal) {
    // A child that already exited is not an error here.
    let _ = kill(Pid::from_raw(child.id() as i32), sig);
}

impl LocalCluster {
    /// Start the nodes (node 1 bootstraps a new cluster) and wait for a
    /// leader.
    pub async fn start(spec: Spec) -> Result<LocalCluster, LaunchError> {
        let c = Self::spawn_all(spec)?;
        c.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// Start the nodes without waiting for a leader.
    pub fn spawn_all(spec: Spec) -> Result<LocalCluster, LaunchError> {
        let mut c = Self::layout(spec)?;
        let fresh = !c.nodes[0].data_dir.join("node_id").exists();
        for id in 1..=c.spec.nodes {
            let mut args = vec!["--peers".to_string(), c.peers()];
            // Only a brand-new cluster bootstraps, and only from node 1.
            if fresh && id == 1 {
                args.push("--bootstrap".into());
            }
            c.spawn(id, &args)?;
        }
        Ok(c)
    }

    /// Lay the nodes out (addresses, data dirs, logs) without starting
    /// any: start each with [`LocalCluster::start_node`].
    pub fn layout(spec: Spec) -> Result<LocalCluster, LaunchError> {
        let root = match &spec.data_dir {
            Some(p) => Root::Kept(p.clone()),
            None => Root::Temp(tempfile::tempdir().map_err(|e| LaunchError::Io(format!("temp dir: {e}")))?),
        };
        std::fs::create_dir_all(root.path()).map_err(|e| LaunchError::Io(format!("{}: {e}", root.path().display())))?;
        let mut nodes = Vec::new();
        for id in 1..=spec.nodes {
            let addr = match (spec.addrs.get(&id), spec.base_port) {
                (Some(addr), _) => addr.clone(),
                (None, Some(base)) => format!("127.0.0.1:{}", base + (id - 1) as u16),
                (None, None) => format!("127.0.0.1:{}", free_port()?),
            };
            let http_addr = match spec.http_base_port {
                None => None,
                Some(0) => Some(format!("127.0.0.1:{}", free_port()?)),
                Some(base) => Some(format!("127.0.0.1:{}", base + (id - 1) as u16)),
            };
            nodes.push(LocalNode {
                id,
                addr,
                http_addr,
                data_dir: spec.node_dirs.get(&id).cloned().unwrap_or_else(|| root.path().join(format!("node-{id}"))),
                log: root.path().join(format!("node-{id}.log")),
                child: None,
            });
        }
        Ok(LocalCluster { root, spec, nodes })
    }

    /// Start node `id` (not running) with these arguments besides its id,
    /// address, data dir and the spec's flags (`--peers`, `--bootstrap`).
    pub fn start_node(&mut self, id: u64, args: &[String]) -> Result<(), LaunchError> {
        if self.node(id).is_running() {
            return Err(LaunchError::Io(format!("node {id} is running")));
        }
        self.spawn(id, args)
    }

    /// `1=ADDR,2=ADDR,...`
    pub fn peers(&self) -> String {
        self.nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",")
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn node(&self, id: u64) -> &LocalNode {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut LocalNode {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The command line of node `id` (for people: how to restart it).
    pub fn command_line(&self, id: u64) -> String {
        let n = self.node(id);
        let http = n.http_addr.as_ref().map(|a| format!(" --http-listen {a}")).unwrap_or_default();
        let tls = self.tls_flags(id);
        let tls = if tls.is_empty() { String::new() } else { format!(" {}", tls.join(" ")) };
        format!(
            "{} server --id {id} --listen {} --data-dir {} --peers {}{http}{tls} {}",
            self.spec.binary.display(),
            n.addr,
            n.data_dir.display(),
            self.peers(),
            self.spec.flags.join(" ")
        )
    }

    /// Node `id`'s TLS flags, if the cluster serves TLS.
    fn tls_flags(&self, id: u64) -> Vec<String> {
        let Some(t) = self.spec.tls.as_ref().and_then(|b| b.server_tls(id)) else {
            return Vec::new();
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        vec![
            "--tls-cert".into(),
            t.cert.display().to_string(),
            "--tls-key".into(),
            t.key.display().to_string(),
            "--client-ca".into(),
            path(&t.client_ca),
            "--peer-ca".into(),
            path(&t.peer_ca),
            "--peer-cert".into(),
            path(&t.peer_cert),
            "--peer-key".into(),
            path(&t.peer_key),
        ]
    }

    /// A client of `endpoints`, over TLS when the cluster serves it.
    fn make_client(&self, endpoints: Vec<String>) -> Client {
        let client = Client::new(endpoints);
        match self.spec.tls.as_ref().map(|b| b.client_tls().load()) {
            None => client,
            Some(Ok(tls)) => client.with_tls(tls),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the cluster's client certificates do not load; connecting in plaintext");
                client
            }
        }
    }

    fn spawn(&mut self, id: u64, args: &[String]) -> Result<(), LaunchError> {
        let mut flags = self.tls_flags(id);
        flags.extend(self.spec.flags.iter().cloned());
        let env = self.spec.env.get(&id).cloned().unwrap_or_default();
        let binary = self.spec.binaries.get(&id).unwrap_or(&self.spec.binary).clone();
        let filter = self.spec.log_filter.clone();
        let node = self.node_mut(id);
        let http: Vec<String> = node.http_addr.iter().flat_map(|a| ["--http-listen".to_string(), a.clone()]).collect();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| LaunchError::Io(format!("{}: {e}", node.log.display())))?;
        let err = log.try_clone().map_err(|e| LaunchError::Io(e.to_string()))?;
        let child = Command::new(&binary)
            .args(["server", "--id", &id.to_string(), "--listen", &node.addr, "--data-dir"])
            .arg(&node.data_dir)
            .args(args)
            .args(&http)
            .args(&flags)
            .envs(env)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| LaunchError::Io(format!("starting node {id} ({}): {e}", binary.display())))?;
        node.child = Some(child);
        Ok(())
    }

    /// Start one more node process (id = current count + 1), not yet a
    /// member; returns its id and address.
    pub fn spawn_new_node(&mut self) -> Result<(u64, String), LaunchError> {
        let id = self.nodes.len() as u64 + 1;
        let root = self.root.path().to_path_buf();
        self.nodes.push(LocalNode {
            id,
            addr: format!("127.0.0.1:{}", free_port()?),
            http_addr: None,
            data_dir: root.join(format!("node-{id}")),
            log: root.join(format!("node-{id}.log")),
            child: None,
        });
        self.spawn(id, &[])?;
        Ok((id, self.node(id).addr.clone()))
    }

    /// Run node `id` from `binary` from its next start on (a rolling
    /// upgrade, or a rollback).
    pub fn set_binary(&mut self, id: u64, binary: impl Into<PathBuf>) {
        self.spec.binaries.insert(id, binary.into());
    }

    /// Restart a stopped node with only id, listen and data dir (and the
    /// spec's flags).
    pub fn restart(&mut self, id: u64) -> Result<(), LaunchError> {
        if self.node(id).is_running() {
            return Err(LaunchError::Io(format!("node {id} is running")));
        }
        self.spawn(id, &[])
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, id: u64) {
        if let Some(c) = &self.node(id).child {
            signal(c, Signal::SIGSTOP);
        }
    }

    pub fn resume(&self, id: u64) {
        if let Some(c) = &self.node(id).child {
            signal(c, Signal::SIGCONT);
        }
    }

    /// SIGTERM and wait for the exit; returns its status.
    pub async fn stop(&mut self, id: u64) -> Result<ExitStatus, LaunchError> {
        let statuses = self.stop_nodes(&[id]).await?;
        statuses.into_iter().next().map(|(_, s)| s).ok_or_else(|| LaunchError::Io(format!("node {id} is not running")))
    }

    /// SIGTERM every running node at once, then wait for each.
    pub async fn stop_all(&mut self) -> Result<Vec<(u64, ExitStatus)>, LaunchError> {
        let ids: Vec<u64> = self.nodes.iter().filter(|n| n.is_running()).map(|n| n.id).collect();
        self.stop_nodes(&ids).await
    }

    async fn stop_nodes(&mut self, ids: &[u64]) -> Result<Vec<(u64, ExitStatus)>, LaunchError> {
        const WAIT: Duration = Duration::from_secs(15);
        let mut children: Vec<(u64, Child)> =
            ids.iter().filter_map(|id| self.node_mut(*id).child.take().map(|c| (*id, c))).collect();
        for (_, c) in &children {
            signal(c, Signal::SIGCONT);
            signal(c, Signal::SIGTERM);
        }
        let mut out = Vec::new();
        for (id, child) in &mut children {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((*id, status));
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LaunchError::StuckOnStop { id: *id, waited: WAIT });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(out)
    }

    /// Nodes whose process has exited since the last call, with how.
    pub fn exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    n.child = None;
                    out.push((n.id, status));
                }
            }
        }
        out
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        self.make_client(self.endpoints())
    }

    /// A client of one node only, with no failover.
    pub fn client_of(&self, id: u64) -> Client {
        let mut c = self.make_client(vec![self.node(id).addr.clone()]);
        c.deadline = Duration::from_millis(1);
        c
    }

    /// The node's own Raft view (`None` if it does not answer within 1 s:
    /// a paused node must not hold up a poll of the others).
    pub async fn node_status(&self, id: u64) -> Option<pb::NodeStatusResponse> {
        let mut c = self.client_of(id);
        c.attempt_timeout = Duration::from_secs(1);
        c.node_status().await.ok()
    }

    /// Wait until a running node reports that it leads.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, LaunchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                if let Some(s) = self.node_status(n.id).await {
                    if s.role == "leader" {
                        return Ok(s.id);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LaunchError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of a node's log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                signal(&c, Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
