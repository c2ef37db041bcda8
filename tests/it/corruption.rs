//! Damaged storage (issue 31): a node never silently forgets what it
//! acknowledged. Damage before a WAL's last record is refused at start
//! (exit 65, naming the file and offset), `admin check` says so, a torn
//! last record is dropped, damage found while running stops the node, and
//! `drover admin rejoin` brings a damaged node back under a new id without
//! losing anything the cluster acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Exit status of a node whose data is damaged (README, "When a disk fills
/// or fails").
const EXIT_DATA_DAMAGED: i32 = 65;

/// The newest WAL file of a data dir.
fn newest_wal(data_dir: &Path) -> PathBuf {
    drover::store::wal::files(&data_dir.join("db")).expect("list the WAL files").pop().expect("a WAL file")
}

/// XOR `len` bytes at `at` with 0xff (a bad sector, a firmware bug).
fn flip(file: &Path, at: usize, len: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    for b in &mut bytes[at..at + len] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).expect("write");
}

/// `drover admin check --data-dir DIR`: (exit code, stdout + stderr).
fn admin_check(dir: &Path) -> (Option<i32>, String) {
    let o = Command::new(BIN).args(["admin", "check", "--data-dir"]).arg(dir).env_remove("RUST_LOG").output();
    let o = o.expect("run drover admin check");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

/// Wait for node `id` to exit (it must, within 30 s).
async fn exit_of(c: &mut TestCluster, id: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, status)) = c.exited().into_iter().find(|(n, _)| *n == id) {
            return status;
        }
        assert!(Instant::now() < deadline, "node {id} kept running; log:\n{}", c.log_tail(id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn big(i: usize) -> drover::pb::TaskSpec {
    let mut s = spec("big", &vec![b'a' + (i % 26) as u8; 300 << 10]);
    s.idempotency_key = format!("big-{i}");
    s
}

/// The first line of node `id`'s log that contains `what`.
fn log_line(c: &TestCluster, id: u64, what: &str) -> String {
    let log = std::fs::read_to_string(&c.node(id).log).unwrap_or_default();
    log.lines().find(|l| l.contains(what)).map(str::to_string).unwrap_or_else(|| {
        panic!("no line with {what:?} in node {id}'s log:\n{}", c.log_tail(id));
    })
}

/// The experiment: one node, three acknowledged 300 KB tasks, 64
/// bytes flipped in the middle of the WAL. Before: `admin check` said
/// "safe" and the node started without tasks 2 and 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wal_damaged_in_the_middle_is_refused_not_silently_truncated() {
    let mut c = TestCluster::start(1, &[]).await;
    let client = c.client();
    for i in 0..3 {
        client.schedule(0, big(i)).await.expect("schedule");
    }
    c.stop(1).await;
    let dir = c.node(1).data_dir.clone();
    let wal = newest_wal(&dir);
    let name = wal.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let len = std::fs::metadata(&wal).expect("stat").len() as usize;
    flip(&wal, len / 2, 64);

    let (code, out) = admin_check(&dir);
    assert_eq!(code, Some(1), "admin check exits 1: {out}");
    assert!(out.contains("NOT safe to start") && out.contains(&name) && out.contains("at byte"), "{out}");
    assert!(!out.contains("ok, safe"), "{out}");

    c.restart(1);
    let status = exit_of(&mut c, 1).await;
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "{status}; log:\n{}", c.log_tail(1));
    let refusal = log_line(&c, 1, "is damaged");
    assert!(refusal.contains(&name) && refusal.contains("at byte"), "names the file and offset: {refusal}");
    assert!(refusal.contains("drover admin rejoin"), "names the way out: {refusal}");
    println!("refused: {refusal}\nadmin check: {out}");
}

/// A torn tail: the last WAL record cut short, as a crash mid-write leaves
/// it. It was never acknowledged; the node drops it and starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_tail_starts_normally() {
    let mut c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(client.schedule(0, spec("torn", format!("{i}").as_bytes())).await.expect("schedule").task_id);
    }
    c.stop(1).await;
    let dir = c.node(1).data_dir.clone();
    let wal = newest_wal(&dir);
    let len = std::fs::metadata(&wal).expect("stat").len();
    // Every WAL record is longer than 10 bytes: this cuts the last one.
    std::fs::OpenOptions::new().write(true).open(&wal).expect("open").set_len(len - 10).expect("truncate");

    let (code, out) = admin_check(&dir);
    assert_eq!(code, Some(0), "a torn tail is safe to start: {out}");
    assert!(out.contains("cut short by a crash"), "it is reported: {out}");

    c.restart(1);
    c.wait_for_leader(Duration::from_secs(30)).await;
    let warning = log_line(&c, 1, "cut short by a crash");
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    client.schedule(0, spec("torn", b"after")).await.expect("the node serves");
    println!("torn tail: {warning}");
}

/// Damage found while the node runs stops it (exit 65): a table block
/// damaged under a running node, found by a client's read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damage_found_while_running_stops_the_node() {
    let mut c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let mut ids = Vec::new();
    for i in 0..300 {
        let mut s = spec("runtime", &vec![b'p'; 2048]);
        s.idempotency_key = format!("k{i}");
        ids.push(client.schedule(0, s).await.expect("schedule").task_id);
    }
    c.stop(1).await;
    let dir = c.node(1).data_dir.clone();
    {
        // Into table files: the node reads them block by block, checksummed.
        let db = drover::store::open_db(&dir.join("db")).expect("open the stopped node's db");
        for cf in ["sm", "log"] {
            db.flush_cf(db.cf_handle(cf).expect("column family")).expect("flush");
        }
    }
    c.restart(1);
    c.wait_for_leader(Duration::from_secs(30)).await;
    let sst = crate::disk::largest_sst(&dir.join("db"));
    let len = std::fs::metadata(&sst).expect("stat").len() as usize;
    flip(&sst, len / 2, 64);
    // Payloads are read from disk (the start check does not cache them).
    let mut failed = None;
    for id in &ids {
        if let Err(e) = c.client_of(1).get_task(*id, false, true).await {
            failed = Some((*id, e));
            break;
        }
    }
    let (id, e) = failed.expect("some read crosses the damaged block");
    let status = exit_of(&mut c, 1).await;
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "{status}; log:\n{}", c.log_tail(1));
    let line = log_line(&c, 1, "damaged data found");
    println!("reading task {id} failed ({}); the node stopped: {line}", e.message());
}

/// Every node's (term, leader) as it reports them, recorded into `seen`.
async fn record_leaders(c: &TestCluster, seen: &mut BTreeMap<u64, std::collections::BTreeSet<u64>>) {
    for n in c.nodes.iter().filter(|n| n.is_running()) {
        if let Some(s) = c.node_status(n.id).await {
            if s.has_leader {
                seen.entry(s.term).or_default().insert(s.leader_id);
            }
        }
    }
}

/// The node replacing `old`: run `admin rejoin` on its data dir, start it
/// again (same `--id`), and wait until the new id is a voter and the old
/// one gone. Returns the new id.
async fn rejoin(c: &mut TestCluster, old: u64, others: &str) -> u64 {
    let dir = c.node(old).data_dir.clone();
    let (ok, out, err) = cli(others, &["admin", "rejoin", "--data-dir", dir.to_str().expect("utf-8 path")]);
    assert!(ok, "admin rejoin failed: {err}{out}");
    let new: u64 = out
        .split("now belongs to node ")
        .nth(1)
        .and_then(|s| s.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the new id in: {out}"));
    assert!(new > old, "a new id: {out}");
    let (ok, out2, _) = cli(others, &["admin", "rejoin", "--data-dir", dir.to_str().expect("utf-8 path")]);
    assert!(ok && out2.contains(&format!("belongs to node {new}")), "repeating it changes nothing: {out2}");
    c.restart(old);
    wait_until(Duration::from_secs(120), "the new node to replace the old one as a voter", || async {
        let v = status_json(others);
        let members = v["members"].as_array()?.clone();
        let voter = members.iter().any(|m| m["id"] == new && m["voter"] == true);
        let old_gone = members.iter().all(|m| m["id"] != old);
        (voter && old_gone).then_some(())
    })
    .await;
    new
}

/// In a 3-node cluster, bytes flipped in the middle of a stopped follower's
/// WAL: it refuses to start, `admin rejoin` brings it back under a new id
/// (by snapshot), no acknowledged task is lost, and the digests agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_a_damaged_wal_is_refused_and_rejoins_without_losing_anything() {
    let mut c = TestCluster::start(3, &["--snapshot-every", "100", "--logs-to-keep", "20"]).await;
    let client = c.client();
    let leader = c.leader().await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let others = c.nodes.iter().filter(|n| n.id != follower).map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let mut acked = Vec::new();
    for i in 0..3 {
        acked.push(client.schedule(0, big(i)).await.expect("schedule").task_id);
    }
    for i in 0..150 {
        acked.push(client.schedule(0, spec("small", format!("{i}").as_bytes())).await.expect("schedule").task_id);
    }
    wait_until(Duration::from_secs(30), "the follower to apply everything", || async {
        let s = c.node_status(follower).await?;
        let l = c.node_status(leader).await?;
        (s.applied_index >= l.committed_index).then_some(())
    })
    .await;
    c.stop(follower).await;
    // Acknowledged by the other two while the follower is down: enough
    // entries that the leader purges its log (1,024 at a time) behind a
    // snapshot, so the rebuilt node catches up by snapshot.
    for chunk in (150..1350).collect::<Vec<usize>>().chunks(25) {
        let calls = chunk.iter().map(|i| client.schedule(*i, spec("small", format!("{i}").as_bytes())));
        for r in futures::future::join_all(calls).await {
            acked.push(r.expect("schedule").task_id);
        }
    }
    wait_until(Duration::from_secs(30), "the leader to purge its log behind a snapshot", || async {
        let l = c.node_status(leader).await?;
        (l.purged_index > 0).then_some(l.purged_index)
    })
    .await;
    let dir = c.node(follower).data_dir.clone();
    let wal = newest_wal(&dir);
    let name = wal.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let len = std::fs::metadata(&wal).expect("stat").len() as usize;
    flip(&wal, len / 2, 64);
    let (code, out) = admin_check(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&name) && out.contains("NOT safe to start"), "{out}");

    c.restart(follower);
    let status = exit_of(&mut c, follower).await;
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "{status}; log:\n{}", c.log_tail(follower));
    log_line(&c, follower, &name);

    let started = Instant::now();
    let new = rejoin(&mut c, follower, &others).await;
    let took = started.elapsed();
    log_line(&c, follower, "installed snapshot");
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    acked.push(client.schedule(0, spec("small", b"after")).await.expect("the cluster serves").task_id);
    let digests = converged_digests(&c).await;
    assert_eq!(digests.len(), 3, "{digests:?}");
    assert!(digests.values().all(|d| *d == digests[&1]), "replicas differ: {digests:?}");
    let retired = client.add_learner(follower, c.node(follower).addr.clone()).await.expect_err("a retired id");
    assert!(retired.message().contains("cannot be reused"), "{retired:?}");
    println!(
        "damaged follower {follower} came back as node {new} and was a voter {took:?} after `admin rejoin`; {} acknowledged tasks all present",
        acked.len()
    );
}

/// Damage to the WAL record that holds a follower's latest vote: the node
/// refuses to start (it would otherwise come back with an older vote and
/// could vote twice in one term); after `admin rejoin` it votes under a
/// new id, and no term ever has two leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_vote_record_is_refused_and_no_term_has_two_leaders() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let mut leaders = BTreeMap::new();
    record_leaders(&c, &mut leaders).await;
    let leader = c.leader().await;
    let voter = (1..=3).find(|n| *n != leader).expect("a follower");
    let candidate = (1..=3).find(|n| *n != leader && *n != voter).expect("another follower");
    client.schedule(0, spec("ballot", b"before")).await.expect("schedule");
    // An election: `candidate` asks for votes, `voter` grants one (synced).
    client.transfer_leader(candidate).await.expect("transfer leadership");
    wait_until(Duration::from_secs(10), "the voter to follow the new leader", || async {
        let s = c.node_status(voter).await?;
        (s.leader_id == candidate).then_some(())
    })
    .await;
    record_leaders(&c, &mut leaders).await;
    let others = c.nodes.iter().filter(|n| n.id != voter).map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    c.stop(voter).await;

    // The last record that writes the vote key, in the voter's newest WAL.
    let dir = c.node(voter).data_dir.clone();
    let wal = newest_wal(&dir);
    let bytes = std::fs::read(&wal).expect("read");
    let at = bytes.windows(4).rposition(|w| w == b"vote").expect("the vote record in the WAL");
    flip(&wal, at + 4, 8);
    let (code, out) = admin_check(&dir);
    assert_eq!(code, Some(1), "{out}");

    c.restart(voter);
    let status = exit_of(&mut c, voter).await;
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "{status}; log:\n{}", c.log_tail(voter));
    let refusal = log_line(&c, voter, "is damaged");
    record_leaders(&c, &mut leaders).await;

    rejoin(&mut c, voter, &others).await;
    // Elections with the rebuilt node voting.
    for to in [voter, candidate] {
        let target = c.node_status(to).await.expect("status").id;
        client.transfer_leader(target).await.expect("transfer leadership");
        record_leaders(&c, &mut leaders).await;
    }
    client.schedule(0, spec("ballot", b"after")).await.expect("schedule");
    record_leaders(&c, &mut leaders).await;
    for (term, ids) in &leaders {
        assert_eq!(ids.len(), 1, "term {term} had two leaders: {ids:?}");
    }
    let digests = converged_digests(&c).await;
    assert!(digests.values().all(|d| *d == digests[&1]), "replicas differ: {digests:?}");
    println!("vote record damaged at byte {at}: {refusal}\nleaders by term: {leaders:?}");
}

/// The cluster run: node A is stopped, tasks are acknowledged by
/// the leader and node B, everything stops, B's WAL is damaged, and B and A
/// are started first, as after maintenance. Before, B came back without
/// the last tasks, B and A elected a leader, and the tasks were gone on all
/// three nodes. Now B refuses, A alone elects nobody, and once the old
/// leader is back nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_node_restarted_first_cannot_make_the_cluster_forget() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let leader = c.leader().await;
    let a = (1..=3).find(|n| *n != leader).expect("a follower");
    let b = (1..=3).find(|n| *n != leader && *n != a).expect("another follower");
    let mut acked = Vec::new();
    for i in 0..4 {
        acked.push(client.schedule(0, spec("order", format!("{i}").as_bytes())).await.expect("schedule").task_id);
    }
    c.stop(a).await;
    for i in 4..7 {
        acked.push(client.schedule(0, big(i)).await.expect("schedule").task_id);
    }
    c.stop_all().await;
    let wal = newest_wal(&c.node(b).data_dir);
    let len = std::fs::metadata(&wal).expect("stat").len() as usize;
    flip(&wal, len / 2, 64);

    c.restart(b);
    c.restart(a);
    let status = exit_of(&mut c, b).await;
    assert_eq!(status.code(), Some(EXIT_DATA_DAMAGED), "{status}; log:\n{}", c.log_tail(b));
    c.restart(leader);
    c.wait_for_leader(Duration::from_secs(30)).await;
    for id in &acked {
        client.get_task(*id, false, false).await.unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    let others = [a, leader].iter().map(|n| c.node(*n).addr.clone()).collect::<Vec<_>>().join(",");
    let new = rejoin(&mut c, b, &others).await;
    let digests = converged_digests(&c).await;
    assert!(digests.values().all(|d| *d == digests[&1]), "replicas differ: {digests:?}");
    println!("node {b} refused to start; {} acknowledged tasks kept; it rejoined as node {new}", acked.len());
}
