//! Cluster birth and identity: every operator error that used to let one
//! cluster take over another, each asserted by its outcome.
//!
//! - a node of an earlier cluster on a reused address (in plaintext, and
//!   under mTLS with both clusters' certificates from one CA);
//! - a stray `--bootstrap` node among the members of a new cluster;
//! - `--peers` that maps an id to another node's address;
//! - every node started with the same `--peers --bootstrap` (20 times);
//! - a data dir written before cluster IDs, and nodes added to it later;
//! - a node of another cluster offered to `cluster add-node`, and the way
//!   out the README gives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::testkit::Spec;
use drover::pb;
use drover::tls::certs::{write_bundle, Bundle};

use crate::harness::*;

/// A client of node `id` only that retries for `secs`.
fn client_at(c: &TestCluster, id: u64, secs: u64) -> drover::client::Client {
    let mut client = c.client_of(id);
    client.deadline = Duration::from_secs(secs);
    client
}

/// Node `id`'s cluster ID, once it has one.
async fn cluster_id(c: &TestCluster, id: u64) -> String {
    wait_until(Duration::from_secs(20), &format!("node {id} to know its cluster ID"), || async {
        c.node_status(id).await.map(|s| s.cluster_id).filter(|s| !s.is_empty())
    })
    .await
}

/// Whether `f` comes true within `timeout` (polled every 50 ms).
async fn holds_within<F, Fut>(timeout: Duration, f: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How many (pre-)votes node `id` refused.
async fn refused_votes(c: &TestCluster, id: u64) -> u64 {
    let Some(s) = c.node_status(id).await else { return 0 };
    ["vote", "pre-vote"].iter().map(|k| s.refused_messages.get(*k).copied().unwrap_or(0)).sum()
}

/// How many messages node `id` refused, of any kind.
async fn refused_total(c: &TestCluster, id: u64) -> u64 {
    c.node_status(id).await.map(|s| s.refused_messages.values().sum()).unwrap_or(0)
}

/// How many messages of kind `what` node `id` refused.
async fn refused(c: &TestCluster, id: u64, what: &str) -> u64 {
    c.node_status(id).await.and_then(|s| s.refused_messages.get(what).copied()).unwrap_or(0)
}

fn task(callback: &str, i: usize) -> pb::TaskSpec {
    pb::TaskSpec { idempotency_key: format!("{callback}-{i}"), ..spec(callback, format!("{i}").as_bytes()) }
}

fn cluster_spec(nodes: u64, tls: Option<&Bundle>) -> Spec {
    let mut spec = Spec::new(nodes, server_bin()).flags(&["--auto-register"]);
    spec.tls = tls.cloned();
    spec
}

/// Case 1 of the issue: an old 3-node cluster (20 tasks, leader transfers,
/// the last one to `last_leader`) is stopped; a new cluster on the same
/// addresses acknowledges 5 tasks; its node 3 stops and the old node 3
/// comes back on that address, with a higher term: as the old leader it
/// sends appends, as a follower it campaigns. The new cluster keeps its
/// leader, its term and its 5 tasks; the old node is refused, by name, and
/// keeps its own data.
async fn reused_address(tls: Option<Bundle>, last_leader: u64) {
    let mut old = TestCluster::start_spec(cluster_spec(3, tls.as_ref())).await;
    let client = old.client();
    for i in 0..20 {
        client.schedule(i, task("old", i)).await.expect("schedule on the old cluster");
    }
    for to in [2, 3, 1, last_leader] {
        client.transfer_leader(to).await.expect("transfer leadership");
    }
    let old_id = cluster_id(&old, 1).await;
    old.stop_all().await;

    let mut spec = cluster_spec(3, tls.as_ref());
    spec.addrs = old.nodes.iter().map(|n| (n.id, n.addr.clone())).collect::<HashMap<_, _>>();
    let mut new = TestCluster::start_spec(spec).await;
    let client = new.client();
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(client.schedule(i, task("new", i)).await.expect("schedule on the new cluster").task_id);
    }
    let new_id = cluster_id(&new, 1).await;
    assert_ne!(new_id, old_id, "two clusters, two IDs");
    if new.leader().await == 3 {
        client.transfer_leader(1).await.expect("move leadership off node 3");
    }
    new.stop(3).await;
    let leader = new.wait_for_leader(Duration::from_secs(20)).await;
    let term = new.node_status(leader).await.expect("leader status").term;
    let refused_before = refused_total(&new, 1).await + refused_total(&new, 2).await;
    let kinds: &[&str] = if last_leader == 3 { &["append"] } else { &["pre-vote", "vote"] };

    // The old node 3, with its old data dir, on the new node 3's address.
    old.restart(3);
    // It campaigns (pre-votes to nodes 1 and 2) again and again, and the
    // new leader's appends reach it: each side refuses the other.
    let tried = holds_within(Duration::from_secs(30), || async {
        let mut n = 0;
        for id in [1, 2] {
            for kind in kinds {
                n += refused(&new, id, kind).await;
            }
        }
        n >= 6 && refused_total(&new, 1).await + refused_total(&new, 2).await >= refused_before + 6
    })
    .await;
    assert!(
        tried,
        "nodes 1 and 2 did not refuse 6 of the old node's {kinds:?}; its log:\n{}\nnode 1:\n{}",
        old.log_tail(3),
        new.log_tail(1)
    );
    wait_until(Duration::from_secs(20), "the old node to refuse the new leader's appends", || async {
        (refused(&old, 3, "append").await >= 3).then_some(())
    })
    .await;
    let status = wait_until(Duration::from_secs(20), "cluster status to name node 3 as of another cluster", || async {
        let s = client_at(&new, leader, 5).cluster_status().await.ok()?;
        let m = s.members.iter().find(|m| m.id == 3)?;
        (m.error.contains("belongs to another cluster") && m.error.contains(&old_id) && m.error.contains(&new_id))
            .then_some(s)
    })
    .await;
    assert_eq!(status.cluster_id, new_id);

    // The outcome: same leader, same term, every acknowledged task.
    for id in [1, 2] {
        let s = new.node_status(id).await.expect("node status");
        assert_eq!((s.leader_id, s.term), (leader, term), "node {id} kept its leader and term");
        assert_eq!(s.cluster_id, new_id);
    }
    for id in &acked {
        let t = client.get_task(*id, false, false).await.expect("an acknowledged task");
        assert_eq!(t.callback, "new");
    }
    assert_eq!(list(&client, "old", pb::TaskState::Unspecified).await.len(), 0, "no task of the old cluster");
    client.schedule(99, task("new", 99)).await.expect("the new cluster still takes writes");
    // The old node keeps its own cluster and data (as the old leader, it
    // may still believe it leads that cluster, with no quorum to commit).
    let s = old.node_status(3).await.expect("the old node answers");
    assert_eq!((s.cluster_id.as_str(), s.task_count), (old_id.as_str(), 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_an_earlier_cluster_on_a_reused_address_is_refused() {
    // The old node 3 was its cluster's leader: it comes back sending appends.
    reused_address(None, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clusters_sharing_one_ca_under_mtls_still_refuse_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), &[1, 2, 3], &[], Duration::from_secs(3600)).expect("certificates");
    // The old node 3 was a follower: it comes back campaigning.
    reused_address(Some(bundle), 1).await;
}

/// Case 2: node 2 is started by mistake with `--bootstrap` and no
/// `--peers`, forms a cluster of its own and takes 3 tasks; then nodes 1
/// (`--bootstrap --peers 1,2,3`) and 3 start. Node 2 keeps its 3 tasks;
/// nodes 1 and 3 take writes at a steady term; cluster status on node 1
/// names member 2 as of another cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stray_bootstrap_keeps_to_itself_and_the_others_form_their_cluster() {
    let mut c = TestCluster::layout(cluster_spec(3, None));
    let peers = c.peers();
    c.start_node(2, &["--bootstrap"]);
    let stray = client_at(&c, 2, 20);
    let mut stray_tasks = Vec::new();
    for i in 0..3 {
        stray_tasks.push(stray.schedule(i, task("stray", i)).await.expect("the stray node takes writes").task_id);
    }
    let stray_id = cluster_id(&c, 2).await;

    c.start_node(1, &["--bootstrap", "--peers", &peers]);
    c.start_node(3, &["--peers", &peers]);
    let leader = wait_until(Duration::from_secs(30), "node 1 or 3 to lead a named cluster", || async {
        for id in [1, 3] {
            let s = c.node_status(id).await?;
            if s.role == "leader" && !s.cluster_id.is_empty() {
                return Some(id);
            }
        }
        None
    })
    .await;
    let ours = cluster_id(&c, leader).await;
    assert_ne!(ours, stray_id);
    let client = drover::client::Client::new(vec![c.node(1).addr.clone(), c.node(3).addr.clone()]);
    client.schedule(0, task("ours", 0)).await.expect("nodes 1 and 3 take writes");
    let term = c.node_status(leader).await.expect("status").term;

    let status = wait_until(Duration::from_secs(20), "node 1's cluster status to name member 2", || async {
        let s = client_at(&c, 1, 5).cluster_status().await.ok()?;
        let m = s.members.iter().find(|m| m.id == 2)?;
        (m.error.contains("belongs to another cluster") && m.error.contains(&stray_id)).then_some(s)
    })
    .await;
    assert_eq!(status.cluster_id, ours);
    // Node 2 refuses the leader's appends, again and again...
    wait_until(Duration::from_secs(20), "node 2 to refuse 5 appends", || async {
        (refused(&c, 2, "append").await >= 5).then_some(())
    })
    .await;
    // ...and meanwhile the cluster of 1 and 3 writes at a steady term.
    for i in 1..20 {
        client.schedule(i, task("ours", i)).await.expect("a write on nodes 1 and 3");
    }
    for id in [1, 3] {
        let s = c.node_status(id).await.expect("status");
        assert_eq!((s.term, s.leader_id, s.cluster_id.as_str()), (term, leader, ours.as_str()), "node {id}");
    }
    // Node 2 keeps its own cluster and its 3 tasks.
    let s = c.node_status(2).await.expect("node 2 answers");
    assert_eq!((s.role.as_str(), s.cluster_id.as_str(), s.task_count), ("leader", stray_id.as_str(), 3));
    for id in stray_tasks {
        assert_eq!(stray.get_task(id, false, false).await.expect("a stray task").callback, "stray");
    }
    assert_eq!(list(&client, "stray", pb::TaskState::Unspecified).await.len(), 0);
}

/// `--peers` that maps node 2 to node 3's address and node 3 to node 2's:
/// the target-id check refuses every message node 1 sends, so no cluster
/// forms around the wrong addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_that_map_an_id_to_another_nodes_address_are_refused_by_the_target_check() {
    let mut c = TestCluster::layout(cluster_spec(3, None));
    let (a1, a2, a3) = (c.node(1).addr.clone(), c.node(2).addr.clone(), c.node(3).addr.clone());
    let right = c.peers();
    let wrong = format!("1={a1},2={a3},3={a2}");
    c.start_node(2, &["--peers", &right]);
    c.start_node(3, &["--peers", &right]);
    c.start_node(1, &["--bootstrap", "--peers", &wrong]);
    wait_until(Duration::from_secs(30), "nodes 2 and 3 to refuse 3 of node 1's (pre-)votes each", || async {
        (refused_votes(&c, 2).await >= 3 && refused_votes(&c, 3).await >= 3).then_some(())
    })
    .await;
    for id in [2, 3] {
        let s = c.node_status(id).await.expect("status");
        assert_eq!((s.term, s.has_leader, s.last_log_index), (0, false, 0), "node {id} took nothing from node 1");
    }
    let s = c.node_status(1).await.expect("status");
    assert_ne!(s.role, "leader", "node 1 gathered no votes at the wrong addresses");
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    assert!(log.contains("was meant for node 2") || log.contains("was meant for node 3"), "node 1 logs the refusal");
}

/// Case 3: all nodes started with the same `--peers --bootstrap`, 20
/// times: every node stays up, and a write succeeds within 5 s of the
/// first leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_started_with_bootstrap_forms_one_cluster_20_times() {
    for round in 0..20 {
        let mut c = TestCluster::layout(cluster_spec(3, None));
        let peers = c.peers();
        for id in 1..=3 {
            c.start_node(id, &["--peers", &peers, "--bootstrap"]);
        }
        c.wait_for_leader(Duration::from_secs(30)).await;
        let first_leader = Instant::now();
        let mut client = c.client();
        client.deadline = Duration::from_secs(5);
        let written = tokio::time::timeout(Duration::from_secs(5), client.schedule(0, task("birth", round))).await;
        assert!(
            matches!(written, Ok(Ok(_))),
            "round {round}: no write within 5 s of the first leader: {written:?}; logs:\n{}\n{}\n{}",
            c.log_tail(1),
            c.log_tail(2),
            c.log_tail(3)
        );
        assert!(first_leader.elapsed() < Duration::from_secs(5));
        let exited = c.exited();
        assert!(
            exited.is_empty(),
            "round {round}: nodes exited: {exited:?}; logs:\n{}\n{}",
            c.log_tail(2),
            c.log_tail(3)
        );
        let ids = [cluster_id(&c, 1).await, cluster_id(&c, 2).await, cluster_id(&c, 3).await];
        assert!(ids.iter().all(|id| *id == ids[0]), "round {round}: one cluster ID: {ids:?}");
        let exited = c.exited();
        assert!(exited.is_empty(), "round {round}: nodes exited: {exited:?}; log:\n{}", c.log_tail(1));
        c.stop_all().await;
    }
}

/// A data dir written before cluster IDs (`tests/fixtures`): it opens at
/// feature level 1; once the level is raised its leader names the cluster
/// through the log,
/// every task is still there, and nodes added later take the ID from the
/// leader while their data dir is still empty, and keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_made_before_cluster_ids_gets_one_and_nodes_added_later_learn_it() {
    let root = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-cluster-ids/node-1");
    copy_dir(&fixture, &root.path().join("node-1"));
    let (ok, out, err) =
        cli("127.0.0.1:1", &["admin", "check", "--json", "--data-dir", root.path().join("node-1").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"cluster_id\":null"), "no ID before: {out}");
    let mut spec = cluster_spec(1, None);
    spec.data_dir = Some(root.path().to_path_buf());
    let mut c = TestCluster::start_spec(spec).await;
    // Data of 0.1.0 stays at feature level 1, without a cluster ID, until
    // the operator raises the level (README, "Upgrading").
    let one = client_at(&c, 1, 20);
    let status =
        wait_until(Duration::from_secs(20), "the cluster status", || async { one.cluster_status().await.ok() }).await;
    assert_eq!((status.active_feature_level, status.cluster_id.as_str()), (1, ""));
    let r = one.finalize_upgrade(0).await.expect("raise the level");
    assert_eq!((r.previous_feature_level, r.active_feature_level), (1, drover::domain::feature::SUPPORTED));
    let named = cluster_id(&c, 1).await;
    for (i, id) in (1..=5u64).enumerate() {
        let t = one.get_task(id, false, false).await.expect("a task written before the change");
        assert_eq!((t.callback.as_str(), t.idempotency_key.clone()), ("fixture.echo", format!("k{}", i + 1)));
    }
    // A node added later: no ID while it is empty; the ID once added.
    let (id, addr) = c.spawn_new_node().await;
    assert_eq!(c.node_status(id).await.expect("the new node answers").cluster_id, "");
    one.add_learner(id, addr).await.expect("add the node");
    assert_eq!(c.node_status(id).await.expect("status").cluster_id, named, "taken at add-node");
    one.promote_voter(id).await.expect("promote");
    one.schedule(0, task("after", 0)).await.expect("a write with two voters");
    // Both keep it across restarts; the log holds it.
    c.stop_all().await;
    let (ok, out, err) = cli("127.0.0.1:1", &["admin", "check", "--data-dir", c.node(id).data_dir.to_str().unwrap()]);
    assert!(ok && out.contains(&format!("cluster ID: {named}")), "{out}{err}");
    c.restart(1);
    c.restart(id);
    assert_eq!(cluster_id(&c, 1).await, named);
    assert_eq!(cluster_id(&c, id).await, named);
    c.wait_for_leader(Duration::from_secs(20)).await;
    client_at(&c, 1, 20).schedule(1, task("after", 1)).await.expect("a write after the restart");
}

/// A node of another cluster (a stray `--bootstrap`) offered to `cluster
/// add-node` is refused and not added; the way out (README, "Cluster
/// identity"): move its data dir aside and add it back under a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_node_refuses_a_node_of_another_cluster_and_the_way_out_works() {
    let mut spec = cluster_spec(5, None);
    let shared = format!("127.0.0.1:{}", free_port().expect("a port"));
    spec.addrs = HashMap::from([(4, shared.clone()), (5, shared.clone())]);
    let mut c = TestCluster::layout(spec);
    let peers = format!("1={},2={},3={}", c.node(1).addr, c.node(2).addr, c.node(3).addr);
    c.start_node(1, &["--bootstrap", "--peers", &peers]);
    c.start_node(2, &["--peers", &peers]);
    c.start_node(3, &["--peers", &peers]);
    c.start_node(4, &["--bootstrap"]);
    let ours = cluster_id(&c, 1).await;
    let theirs = cluster_id(&c, 4).await;
    let client = drover::client::Client::new(vec![c.node(1).addr.clone(), c.node(2).addr.clone()]);
    let e = client.add_learner(4, shared.clone()).await.expect_err("node 4 is of another cluster");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("belongs to another cluster") && e.message().contains(&theirs), "{e:?}");
    let s = client.cluster_status().await.expect("status");
    assert!(!s.members.iter().any(|m| m.id == 4), "node 4 was not added");
    // The way out: stop it, move its data dir aside, start it empty under a new id.
    c.stop(4).await;
    std::fs::rename(&c.node(4).data_dir, c.root().join("node-4.aside")).unwrap();
    c.start_node(5, &[]);
    wait_until(Duration::from_secs(10), "node 5 to answer", || async { c.node_status(5).await.map(|_| ()) }).await;
    client.add_learner(5, shared).await.expect("node 5 joins");
    client.promote_voter(5).await.expect("promote");
    assert_eq!(cluster_id(&c, 5).await, ours);
    client.schedule(0, task("joined", 0)).await.expect("a write");
}

/// `--bootstrap` with `--peers` that disagree with the membership the
/// node's data dir holds: refused at start, both lists in the error; the
/// same flags as the membership (a template's restart) start fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_with_peers_that_disagree_with_the_held_membership_is_refused_at_start() {
    let mut c = TestCluster::layout(cluster_spec(1, None));
    let peers = c.peers();
    c.start_node(1, &["--bootstrap", "--peers", &peers]);
    c.wait_for_leader(Duration::from_secs(20)).await;
    c.stop(1).await;
    let other = format!("{peers},2=127.0.0.1:1");
    c.start_node(1, &["--bootstrap", "--peers", &other]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some((_, status)) = c.exited().pop() {
            break status;
        }
        assert!(Instant::now() < deadline, "node 1 started with --peers that disagree: {}", c.log_tail(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    let line = log.lines().find(|l| l.contains("disagrees with the membership")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&format!("--peers {other}")) && line.contains(&format!("holds: {peers}")), "{line}");
    c.start_node(1, &["--bootstrap", "--peers", &peers]);
    c.wait_for_leader(Duration::from_secs(20)).await;
}
