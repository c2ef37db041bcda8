//! A cluster of `drover server` processes for tests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::testkit::launcher::free_port;
use crate::testkit::{LocalCluster, Spec};
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

pub struct TestCluster {
    inner: LocalCluster,
}

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
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
    pub async fn start_with_env(n: u64, extra: &[&str], env: HashMap<u64, Vec<(String, String)>>) -> TestCluster {
        let mut spec = Spec::new(n, server_bin()).flags(extra);
        spec.env = env;
        Self::start_spec(spec).await
    }

    /// Start the cluster `spec` describes (its binary is ignored: the
    /// suite's server binary runs).
    pub async fn start_spec(mut spec: Spec) -> TestCluster {
        spec.binary = server_bin().into();
        let formed = spec.binaries.is_empty() && spec.data_dir.is_none();
        let inner = LocalCluster::start(spec).await.expect("start a local cluster");
        let c = TestCluster { inner };
        // A new cluster of this build raises its feature level and names
        // itself before it takes writes: wait for it, so that tests start
        // from a formed cluster (one of another release, or on data of one,
        // has no name).
        if formed {
            wait_until(Duration::from_secs(30), "the new cluster to name itself", || async {
                let leader = c.inner.wait_for_leader(Duration::from_secs(5)).await.ok()?;
                Some(c.node_status(leader).await?.cluster_id).filter(|id| !id.is_empty())
            })
            .await;
        }
        c
    }

    /// Lay the nodes `spec` describes out without starting any (see
    /// [`TestCluster::start_node`]).
    pub fn layout(mut spec: Spec) -> TestCluster {
        spec.binary = server_bin().into();
        TestCluster { inner: LocalCluster::layout(spec).expect("lay out a local cluster") }
    }

    /// Start node `id` with these arguments (`--peers`, `--bootstrap`).
    pub fn start_node(&mut self, id: u64, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.inner.start_node(id, &args).expect("start the node");
    }

    /// SIGTERM a node and wait for its graceful exit.
    pub async fn stop(&mut self, id: u64) {
        let status = self.inner.stop(id).await.expect("stop the node");
        assert!(status.success(), "node {id} exited with {status} on SIGTERM; log:\n{}", self.log_tail(id));
    }

    /// SIGTERM every running node at once, then wait for each to exit cleanly.
    pub async fn stop_all(&mut self) {
        for (id, status) in self.inner.stop_all().await.expect("stop the nodes") {
            assert!(status.success(), "node {id} exited with {status} on SIGTERM; log:\n{}", self.log_tail(id));
        }
    }

    /// Restart a stopped node with only id, listen and data dir.
    pub fn restart(&mut self, id: u64) {
        self.inner.restart(id).expect("restart the node");
    }

    /// Start one more node process, not yet a member; returns its id and
    /// address once it answers.
    pub async fn spawn_new_node(&mut self) -> (u64, String) {
        let (id, addr) = self.inner.spawn_new_node().expect("spawn a node");
        wait_until(Duration::from_secs(10), "the new node to answer", || async {
            self.node_status(id).await.map(|_| ())
        })
        .await;
        (id, addr)
    }

    pub fn log_tail(&self, id: u64) -> String {
        self.inner.log_tail(id, 40)
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        let mut c = self.inner.client();
        c.deadline = Duration::from_secs(20);
        c
    }

    /// Wait until a running node reports a leader that is itself running.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        self.inner.wait_for_leader(timeout).await.expect("a leader")
    }

    pub async fn leader(&self) -> u64 {
        self.wait_for_leader(Duration::from_secs(30)).await
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

/// The addresses of every node, comma-separated (for `--endpoint`).
pub fn endpoints(c: &TestCluster) -> String {
    c.endpoints().join(",")
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
    client.register_callback(settings).await.expect("register callback");
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
        ..Default::default()
    }
}

/// Wait until the task is in `state` (a `pb::TaskState` name), returning it.
pub async fn wait_state(client: &Client, id: u64, state: pb::TaskState, timeout: Duration) -> pb::Task {
    let what = format!("task {id} to be {state:?}");
    wait_until(timeout, &what, || async {
        client.get_task(id, true, false).await.ok().filter(|t| t.state == state as i32)
    })
    .await
}

pub async fn list(client: &Client, callback: &str, state: pb::TaskState) -> Vec<pb::Task> {
    client.list_all_tasks(callback, state).await.expect("list tasks")
}

/// Wait until every node reports the same applied index, then return each
/// node's state digest.
pub async fn converged_digests(c: &TestCluster) -> BTreeMap<u64, String> {
    wait_until(Duration::from_secs(60), "every replica at one applied index", || async {
        let mut got = BTreeMap::new();
        for n in c.nodes.iter().filter(|n| n.is_running()) {
            let d = c.client_of(n.id).digest().await.ok()?;
            got.insert(n.id, (d.applied_index, d.digest));
        }
        let first = got.values().next()?.0;
        got.values().all(|(i, _)| *i == first).then(|| got.into_iter().map(|(k, (_, d))| (k, d)).collect())
    })
    .await
}

/// Copy a directory tree (a data-dir fixture) from `from` to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
