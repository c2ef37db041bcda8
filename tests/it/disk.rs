//! Storage faults: a node whose disk fills stops cleanly with a documented
//! exit code and comes back once space is freed; a cluster short of disk
//! refuses new tasks but keeps serving everything else; a node refuses to
//! start without room.
//!
//! Node 1's data dir sits on a small tmpfs of its own (mounting needs root,
//! which CI has), filled from outside with a filler file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::testkit::Spec;
use drover::consensus::disk::measure;

use crate::harness::*;

/// Exit status of a node whose storage failed (README, "When a disk fills
/// or fails").
const EXIT_STORAGE_FAILED: i32 = 74;

/// Exit status of a node whose data is damaged.
const EXIT_DATA_DAMAGED: i32 = 65;

/// A size-limited tmpfs, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a {mib} MiB tmpfs failed: this test needs root (CI runs as root)");
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Grow the filler file until at most `left` bytes are free.
    fn fill_to(&self, left: u64) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.filler()).expect("filler");
        let chunk = vec![0u8; 256 << 10];
        loop {
            let (free, _) = measure(self.path()).expect("statvfs");
            if free <= left {
                return;
            }
            let n = ((free - left) as usize).min(chunk.len());
            if f.write_all(&chunk[..n]).and_then(|_| f.flush()).is_err() {
                return;
            }
        }
    }

    fn free_filler(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A 3-node cluster whose node 1 keeps its data on `fs`, with node 1 as
/// the leader.
async fn cluster_with_node1_on(fs: &SmallFs, flags: &[&str]) -> TestCluster {
    let mut spec = Spec::new(3, server_bin()).flags(&["--auto-register"]).flags(flags);
    spec.node_dirs.insert(1, fs.path().join("node-1"));
    let c = TestCluster::start_spec(spec).await;
    let leader = c.leader().await;
    if leader != 1 {
        c.client().transfer_leader(1).await.expect("transfer leadership to node 1");
    }
    wait_until(Duration::from_secs(10), "node 1 to lead", || async { (c.leader().await == 1).then_some(()) }).await;
    c
}

fn big(callback: &str, i: usize) -> drover::pb::TaskSpec {
    let mut s = spec(callback, &vec![b'x'; 900 << 10]);
    s.idempotency_key = format!("big-{i}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_fills_exits_74_and_comes_back_once_space_is_freed() {
    let fs = SmallFs::mount(64);
    let mut c = cluster_with_node1_on(&fs, &["--min-free-disk", "0"]).await;
    let client = c.client();
    let before = client.schedule(0, spec("small", b"before")).await.expect("schedule").task_id;
    fs.fill_to(6 << 20);

    // 900 KiB payloads until node 1 (the leader) runs out of space.
    let mut acked = vec![before];
    let started = Instant::now();
    // From the first write that did not succeed at once to the next that did:
    // what a client saw of the failure.
    let (mut failing_since, mut unavailable) = (None, Duration::ZERO);
    let status = loop {
        if let Some((_, status)) = c.exited().into_iter().find(|(id, _)| *id == 1) {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("failed to send RaftMsg")).collect();
            panic!(
                "node 1 never exited; its log without repeats:\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        let t0 = Instant::now();
        match client.schedule(0, big("big", acked.len())).await {
            Ok(r) => {
                acked.push(r.task_id);
                if t0.elapsed() > Duration::from_millis(500) || failing_since.is_some() {
                    unavailable = unavailable.max(failing_since.unwrap_or(t0).elapsed());
                }
                failing_since = None;
            }
            Err(_) => {
                failing_since.get_or_insert(t0);
            }
        }
    };
    assert_eq!(status.code(), Some(EXIT_STORAGE_FAILED), "node 1 exited with {status}; log:\n{}", c.log_tail(1));
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("storage failed")),
        "one ERROR line names the cause; log:\n{}",
        c.log_tail(1)
    );

    // The others keep serving, and nothing acknowledged is lost.
    let new_leader = c.wait_for_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, 1);
    let after = client.schedule(0, spec("small", b"after")).await.expect("the cluster serves without node 1");
    acked.push(after.task_id);
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }

    // Space freed, node 1 restarted: it catches up and agrees.
    fs.free_filler();
    let restarted = Instant::now();
    c.restart(1);
    let digests = converged_digests(&c).await;
    let back = restarted.elapsed();
    assert_eq!(digests.len(), 3, "{digests:?}");
    assert!(digests.values().all(|d| *d == digests[&1]), "replicas differ: {digests:?}");
    println!(
        "disk full: {} tasks acknowledged, node 1 exited {EXIT_STORAGE_FAILED} {:?} after the first write; longest write seen by the client while it failed {unavailable:?}; new leader node {new_leader}; node 1 caught up {back:?} after its restart",
        acked.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_short_of_disk_refuses_new_tasks_and_keeps_serving_the_rest() {
    let fs = SmallFs::mount(64);
    let c = cluster_with_node1_on(&fs, &["--min-free-disk", "24MiB"]).await;
    let client = c.client();
    let existing = client.schedule(0, spec("quota", b"kept")).await.expect("schedule").task_id;
    let doomed = client.schedule(0, spec("quota", b"to cancel")).await.expect("schedule").task_id;
    // A periodic schedule: while short of disk, its slots are skipped (with
    // a note), never fired.
    let ep = c.endpoints()[1].clone();
    let (ok, _, err) =
        cli(&ep, &["schedule", "create", "tick", "--callback", "quota", "--every", "1s", "--overlap", "allow"]);
    assert!(ok, "schedule create: {err}");
    let schedule = || async {
        let (ok, out, err) = cli(&ep, &["schedule", "get", "tick", "--json"]);
        assert!(ok, "schedule get: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    wait_until(Duration::from_secs(10), "the schedule to fire", || async {
        (schedule().await["fired"].as_u64() > Some(0)).then_some(())
    })
    .await;

    fs.fill_to(16 << 20);
    // The leader is short of space: it hands over, and writes are refused.
    wait_until(Duration::from_secs(15), "node 1 to hand leadership over", || async {
        let l = c.leader().await;
        (l != 1).then_some(l)
    })
    .await;
    let refused = wait_until(Duration::from_secs(15), "new tasks to be refused", || async {
        client.schedule(0, spec("quota", b"refused")).await.err()
    })
    .await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("out of disk") && refused.message().contains("node 1"), "{refused:?}");
    let status = c.client_of(1).node_status().await.expect("node 1 status");
    assert!(status.disk_alarm, "node 1 reports its alarm: {status:?}");
    // The schedule skips its slots, says why, and creates no task.
    let at_alarm = schedule().await;
    let skipping = wait_until(Duration::from_secs(10), "the schedule to skip slots", || async {
        let s = schedule().await;
        (s["skipped"].as_u64() >= Some(at_alarm["skipped"].as_u64().unwrap_or(0) + 2)).then_some(s)
    })
    .await;
    assert!(skipping["note"].as_str().is_some_and(|n| n.contains("out of disk")), "a note says why: {skipping}");
    assert!(
        skipping["fired"].as_u64() <= at_alarm["fired"].as_u64().map(|f| f + 1),
        "no slot fires while the cluster is out of disk (one may have been under way): {at_alarm} then {skipping}"
    );

    // Reads, cancels and dead-letter purges keep working.
    assert_eq!(client.get_task(existing, false, false).await.expect("read").id, existing);
    client.cancel_task(doomed).await.expect("cancel while short of disk");
    let purge = drover::pb::DeadLetterRequest {
        target: Some(drover::pb::dead_letter_request::Target::Callback("quota".into())),
        with_dependents: false,
    };
    client.dead_letters(0, purge, true).await.expect("purge while short of disk");

    // Space freed: new tasks are accepted again.
    fs.free_filler();
    wait_until(Duration::from_secs(15), "new tasks to be accepted again", || async {
        client.schedule(0, spec("quota", b"accepted")).await.ok()
    })
    .await;
    // ... and the schedule fires again; its note is gone.
    let fired = skipping["fired"].as_u64().unwrap_or(0);
    wait_until(Duration::from_secs(10), "the schedule to fire again", || async {
        let s = schedule().await;
        (s["fired"].as_u64() > Some(fired + 1) && s["note"] == "").then_some(())
    })
    .await;
}

#[test]
fn a_node_without_enough_free_disk_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().expect("a free port");
    let out = Command::new(server_bin())
        .args(["server", "--id", "1", "--listen", &format!("127.0.0.1:{port}"), "--bootstrap"])
        .args(["--min-free-disk", "99.9%", "--data-dir"])
        .arg(dir.path().join("d"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run drover server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains("not enough free disk space") && stderr.contains("--min-free-disk requires"),
        "the refusal says how much there is and how much is needed: {stderr}"
    );
}

/// The largest RocksDB table file under `db`.
pub fn largest_sst(db: &Path) -> PathBuf {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(db)
        .expect("read the db dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
        .collect();
    files.sort();
    files.pop().expect("a table file").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_data_dir_is_found_by_admin_check_and_refused_at_start() {
    let mut c = TestCluster::start(1, &[]).await;
    let client = c.client();
    for i in 0..300 {
        let mut s = spec("damage", &vec![b'x'; 2048]);
        s.idempotency_key = format!("k{i}");
        client.schedule(0, s).await.expect("schedule");
    }
    c.stop(1).await;
    let data = c.node(1).data_dir.clone();
    // Move the data from the WAL into table files, where a damaged block is
    // found by its checksum.
    {
        let db = drover::store::open_db(&data.join("db")).expect("open the stopped node's db");
        for cf in ["sm", "log"] {
            db.flush_cf(db.cf_handle(cf).expect("column family")).expect("flush");
        }
    }
    let check = |dir: &Path| {
        let o = Command::new(BIN).args(["admin", "check", "--data-dir"]).arg(dir).env_remove("RUST_LOG").output();
        let o = o.expect("run drover admin check");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let (ok, out) = check(&data);
    assert!(ok && out.contains("safe to start"), "an intact data dir passes: {out}");

    let sst = largest_sst(&data.join("db"));
    let mut bytes = std::fs::read(&sst).expect("read the table file");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&sst, bytes).expect("damage the table file");
    let name = sst.file_name().and_then(|n| n.to_str()).expect("file name").to_string();

    let (ok, out) = check(&data);
    assert!(!ok, "admin check must fail on a damaged file: {out}");
    assert!(!out.contains("ok, safe"), "{out}");
    assert!(out.contains("NOT safe to start") && out.contains(&name), "it names the file: {out}");

    c.restart(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some((_, status)) = c.exited().into_iter().find(|(id, _)| *id == 1) {
            break status;
        }
        assert!(Instant::now() < deadline, "the damaged node kept running; log:\n{}", c.log_tail(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "the damaged node refuses to start: {status}");
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    let refusal = log.lines().find(|l| l.contains("is damaged")).expect("the refusal");
    assert!(
        refusal.contains(&name) && refusal.contains("admin rejoin"),
        "it names the file and the way out: {refusal}"
    );
    println!("refused: {refusal}");
}

/// Build the fsync-stalling shim (`fixtures/slow_fsync.c`) into `dir`.
fn slow_fsync_shim(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/slow_fsync.c");
    let lib = dir.join("libslowfsync.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("run cc (a C compiler is a build prerequisite)");
    assert!(out.status.success(), "building the shim failed: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_fsync_stalls_hands_leadership_over() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let shim = slow_fsync_shim(tmp.path());
    let flag = tmp.path().join("stall");
    let mut cluster = Spec::new(3, server_bin()).flags(&["--auto-register", "--max-fsync-stall", "1s"]);
    cluster.env.insert(
        1,
        vec![
            ("LD_PRELOAD".into(), shim.display().to_string()),
            ("DROVER_SLOW_FSYNC_FLAG".into(), flag.display().to_string()),
            ("DROVER_SLOW_FSYNC_MS".into(), "4000".into()),
        ],
    );
    let c = TestCluster::start_spec(cluster).await;
    if c.leader().await != 1 {
        c.client().transfer_leader(1).await.expect("transfer leadership to node 1");
    }
    wait_until(Duration::from_secs(10), "node 1 to lead", || async { (c.leader().await == 1).then_some(()) }).await;
    let client = c.client();
    client.schedule(0, spec("steady", b"before")).await.expect("schedule");

    std::fs::write(&flag, b"").expect("stall node 1's disk");
    let stalled_at = Instant::now();
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    let moved = loop {
        let t0 = Instant::now();
        if let Ok(r) = client.schedule(0, spec("steady", b"during")).await {
            acked.push(r.task_id);
        }
        slowest = slowest.max(t0.elapsed());
        // The others' view: node 1 itself learns late, its vote waits on its disk.
        let others: Vec<u64> = futures::future::join_all([2, 3].map(|id| c.node_status(id)))
            .await
            .into_iter()
            .flatten()
            .filter(|s| s.has_leader)
            .map(|s| s.leader_id)
            .collect();
        if !others.is_empty() && others.iter().all(|l| *l != 1) {
            break stalled_at.elapsed();
        }
        assert!(stalled_at.elapsed() < Duration::from_secs(30), "node 1 kept leading on a stalled disk");
    };
    std::fs::remove_file(&flag).expect("unstall");
    for _ in 0..5 {
        acked.push(client.schedule(0, spec("steady", b"after")).await.expect("writes after the hand-over").task_id);
    }
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    assert!(log.contains("fsync is stalling"), "node 1 says why it stepped down; log:\n{}", c.log_tail(1));
    println!(
        "fsync stall: leadership left node 1 {moved:?} after its disk stalled; slowest write meanwhile {slowest:?}"
    );
    for l in log.lines().filter(|l| l.contains("drover") && (l.contains("WARN") || l.contains("leadership"))) {
        println!("  {l}");
    }
}
