//! A cluster of `drover server` processes for tests.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover::client::Client;
use drover::pb;
pub use nix::sys::signal::Signal;

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_drover");

/// The server binary the tests start: this build's, or `DROVER_TEST_BIN`
/// (to run the suite's nodes from another build, e.g. to show that a test
/// fails on an older one).
pub fn server_bin() -> String {
    std::env::var("DROVER_TEST_BIN").unwrap_or_else(|_| BUILT_BIN.to_string())
}

/// The CLI binary: always this build's.
pub const BIN: &str = BUILT_BIN;

/// Scale factor for heavier tests: `DROVER_TEST_SCALE=20` runs 20x the writes.
pub fn scale() -> usize {
    std::env::var("DROVER_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// A free loopback port (bound then released; the OS does not hand it out
/// again right away).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct TestCluster {
    _dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    extra: Vec<String>,
    /// Extra environment per node id (e.g. libfaketime for a wrong clock).
    env: std::collections::HashMap<u64, Vec<(String, String)>>,
}

impl TestCluster {
    /// Start `n` nodes that accept unregistered callbacks; node 1 bootstraps.
    pub async fn start(n: u64, extra: &[&str]) -> TestCluster {
        let mut flags = vec!["--auto-register"];
        flags.extend_from_slice(extra);
        Self::start_strict(n, &flags).await
    }

    /// Start `n` nodes with exactly these extra flags.
    pub async fn start_strict(n: u64, extra: &[&str]) -> TestCluster {
        Self::start_with_env(n, extra, Default::default()).await
    }

    /// Start `n` nodes with these extra flags, and extra environment for
    /// some of them (kept across restarts).
    pub async fn start_with_env(
        n: u64,
        extra: &[&str],
        env: std::collections::HashMap<u64, Vec<(String, String)>>,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<TestNode> = (1..=n)
            .map(|id| TestNode {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            })
            .collect();
        let mut c = TestCluster { _dir: dir, nodes, extra: extra.iter().map(|s| s.to_string()).collect(), env };
        let peers = c.nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        for id in 1..=n {
            let mut args = vec!["--peers".to_string(), peers.clone()];
            if id == 1 {
                args.push("--bootstrap".into());
            }
            c.spawn(id, &args);
        }
        c.wait_for_leader(Duration::from_secs(30)).await;
        c
    }

    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64, args: &[String]) {
        let extra = self.extra.clone();
        let env = self.env.get(&id).cloned().unwrap_or_default();
        let node = &mut self.nodes[(id - 1) as usize];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let err = log.try_clone().expect("log clone");
        let child = Command::new(server_bin())
            .args(["server", "--id", &id.to_string(), "--listen", &node.addr, "--data-dir"])
            .arg(&node.data_dir)
            .args(args)
            .args(&extra)
            .envs(env)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn drover server");
        node.child = Some(child);
    }

    /// Start one more node process (id = current count + 1), not yet a
    /// member; returns its id and address.
    pub async fn spawn_new_node(&mut self) -> (u64, String) {
        let id = self.nodes.len() as u64 + 1;
        let root = self.nodes[0].data_dir.parent().expect("cluster dir").to_path_buf();
        self.nodes.push(TestNode {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            data_dir: root.join(format!("node-{id}")),
            log: root.join(format!("node-{id}.log")),
            child: None,
        });
        self.spawn(id, &[]);
        wait_until(Duration::from_secs(10), "the new node to answer", || async {
            self.node_status(id).await.map(|_| ())
        })
        .await;
        (id, self.nodes[(id - 1) as usize].addr.clone())
    }

    /// SIGKILL a node: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM a node and wait for its graceful exit.
    pub fn stop(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            signal_pid(child.id() as i32, Signal::SIGTERM);
            for _ in 0..200 {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "node {id} exited with {status} on SIGTERM; log:\n{}", self.log_tail(id));
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("node {id} did not stop within 10s of SIGTERM");
        }
    }

    /// SIGTERM every running node at once, then wait for each to exit
    /// cleanly.
    pub fn stop_all(&mut self) {
        let mut children: Vec<(u64, Child)> =
            self.nodes.iter_mut().filter_map(|n| n.child.take().map(|c| (n.id, c))).collect();
        for (_, child) in &children {
            signal_pid(child.id() as i32, Signal::SIGTERM);
        }
        for (id, child) in &mut children {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        status.success(),
                        "node {id} exited with {status} on SIGTERM; log:\n{}",
                        self.log_tail(*id)
                    );
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("node {id} did not stop within 15s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Restart a stopped node with only id, listen and data dir.
    pub fn restart(&mut self, id: u64) {
        assert!(self.nodes[(id - 1) as usize].child.is_none(), "node {id} is running");
        self.spawn(id, &[]);
    }

    pub fn log_tail(&self, id: u64) -> String {
        let s = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        let mut c = Client::new(self.nodes.iter().map(|n| n.addr.clone()).collect());
        c.deadline = Duration::from_secs(20);
        c
    }

    /// A client of one node only, with no failover.
    pub fn client_of(&self, id: u64) -> Client {
        let mut c = Client::new(vec![self.node(id).addr.clone()]);
        c.deadline = Duration::from_millis(1);
        c
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    /// The node's own Raft view.
    pub async fn node_status(&self, id: u64) -> Option<pb::NodeStatusResponse> {
        let c = self.client_of(id);
        c.cluster(0).ok()?.node_status(pb::NodeStatusRequest {}).await.ok().map(|r| r.into_inner())
    }

    /// Wait until a running node reports a leader that is itself running.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let running = self.running();
        wait_until(timeout, "a leader among the running nodes", || async {
            for id in &running {
                if let Some(s) = self.node_status(*id).await {
                    if s.role == "leader" {
                        return Some(s.id);
                    }
                }
            }
            None
        })
        .await
    }

    pub async fn leader(&self) -> u64 {
        self.wait_for_leader(Duration::from_secs(30)).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Send `sig` to a child process (ignoring one that is already gone).
pub fn signal_pid(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn spec(callback: &str, payload: &[u8]) -> pb::TaskSpec {
    pb::TaskSpec { callback: callback.into(), payload: payload.to_vec(), ..Default::default() }
}

/// Schedule through `client` (failing over; with an idempotency key, also
/// retrying writes whose outcome is unknown), returning the task id.
pub async fn schedule(
    client: &Client,
    start: usize,
    spec: pb::TaskSpec,
) -> Result<pb::ScheduleResponse, tonic::Status> {
    client.schedule(start, spec).await
}

pub async fn get(client: &Client, start: usize, id: u64, stale: bool) -> Result<pb::Task, tonic::Status> {
    client
        .call(start, |i| async move {
            Ok(client
                .scheduler(i)?
                .get_task(pb::GetTaskRequest { task_id: id, allow_stale: stale, include_payload: false })
                .await?
                .into_inner())
        })
        .await
}

/// The addresses of every node, comma-separated (for `--endpoint`).
pub fn endpoints(c: &TestCluster) -> String {
    c.nodes.iter().map(|n| n.addr.as_str()).collect::<Vec<_>>().join(",")
}

/// Run the drover CLI with `--endpoint`; returns (success, stdout, stderr).
pub fn cli(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .args(["--endpoint", endpoint])
        .env_remove("RUST_LOG")
        .output()
        .expect("run drover");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The cluster status as JSON, from any node.
pub fn status_json(endpoint: &str) -> serde_json::Value {
    let (ok, out, err) = cli(endpoint, &["cluster", "status", "--json"]);
    assert!(ok, "cluster status failed: {err}");
    serde_json::from_str(&out).expect("status json")
}

/// A `drover worker` process.
pub struct WorkerProc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl WorkerProc {
    /// Start `drover worker --endpoint E ARGS...`, logging to `log`.
    pub fn start(endpoint: &str, log: PathBuf, args: &[&str]) -> WorkerProc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("worker log");
        let err = out.try_clone().expect("clone");
        let child = Command::new(BIN)
            .arg("worker")
            .args(["--endpoint", endpoint])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn drover worker");
        WorkerProc { child: Some(child), log }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        signal_pid(self.pid(), sig);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns its log.
    pub fn terminate(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            signal_pid(c.id() as i32, Signal::SIGTERM);
            let _ = c.wait();
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal_pid(c.id() as i32, Signal::SIGCONT);
        }
        self.kill();
    }
}

/// Register (or update) a callback.
pub async fn register(client: &Client, settings: pb::CallbackSettings) {
    let req = pb::RegisterCallbackRequest { settings: Some(settings) };
    client
        .call(0, |i| {
            let req = req.clone();
            async move { Ok(client.scheduler(i)?.register_callback(req).await?.into_inner()) }
        })
        .await
        .expect("register callback");
}

/// Callback settings with the given lease and test-friendly defaults.
pub fn callback(name: &str, lease_ms: u64) -> pb::CallbackSettings {
    pb::CallbackSettings {
        name: name.into(),
        max_attempts: 5,
        lease_ms,
        timeout_ms: 60_000,
        concurrency: 0,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
    }
}

/// Wait until the task is in `state` (a `pb::TaskState` name), returning it.
pub async fn wait_state(client: &Client, id: u64, state: pb::TaskState, timeout: Duration) -> pb::Task {
    let what = format!("task {id} to be {state:?}");
    wait_until(timeout, &what, || async { get(client, 0, id, true).await.ok().filter(|t| t.state == state as i32) })
        .await
}

pub async fn list(client: &Client, callback: &str, state: pb::TaskState) -> Vec<pb::Task> {
    let req = pb::ListTasksRequest {
        callback: callback.into(),
        state: state as i32,
        limit: 10_000,
        after_id: 0,
        allow_stale: false,
    };
    client
        .call(0, |i| {
            let req = req.clone();
            async move { Ok(client.scheduler(i)?.list_tasks(req).await?.into_inner()) }
        })
        .await
        .expect("list tasks")
        .tasks
}
