//! Trace contexts (feature level 3): what the CLI is given (`--traceparent`,
//! or `TRACEPARENT`) is kept with the task (GetTask), through a retry, and
//! reaches the shell worker's command as `TRACEPARENT`; a malformed one is
//! refused; a cluster below level 3 takes a traced schedule without its
//! context, and keeps contexts once raised.

use std::time::Duration;

use crate::harness::*;
use crate::testkit::Spec;
use drover::pb;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced(callback: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        trace: Some(pb::TraceContext { traceparent: PARENT.into(), tracestate: "vendor=1".into() }),
        ..spec(callback, b"")
    }
}

async fn level(client: &drover::client::Client) -> u32 {
    wait_until(Duration::from_secs(20), "the cluster status", || async { client.cluster_status().await.ok() })
        .await
        .active_feature_level
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_clis_traceparent_reaches_get_task_a_retry_and_the_shell_workers_environment() {
    let c = TestCluster::start(1, &[]).await;
    let ep = endpoints(&c);
    let client = c.client();
    // A new cluster is born at this binary's level.
    wait_until(Duration::from_secs(20), "feature level 3", || async {
        (level(&client).await == drover::domain::feature::LEVEL_TRACES).then_some(())
    })
    .await;
    let mut settings = callback("traced_sh", 5_000);
    settings.backoff_initial_ms = 50;
    settings.backoff_max_ms = 100;
    register(&client, settings).await;

    // --traceparent and --tracestate.
    let (ok, out, err) =
        cli(&ep, &["task", "schedule", "traced_sh", "--payload", "a", "--traceparent", PARENT, "--tracestate", "k=v"]);
    assert!(ok, "{err}");
    let by_flag: u64 = out.trim().parse().expect("the id");
    let (ok, out, err) = cli(&ep, &["task", "get", &by_flag.to_string(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["trace"]["traceparent"].as_str(), v["trace"]["tracestate"].as_str()), (Some(PARENT), Some("k=v")));

    // TRACEPARENT in the environment (a script inside a traced job).
    let env_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let o = std::process::Command::new(BIN)
        .args(["task", "schedule", "traced_sh", "--payload", "b", "--endpoint", &ep])
        .env("TRACEPARENT", env_parent)
        .env_remove("TRACESTATE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_env: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().expect("the id");
    let t = client.get_task(by_env, false, false).await.unwrap();
    assert_eq!(t.trace.map(|t| t.traceparent).as_deref(), Some(env_parent));

    // A task scheduled without one has none.
    let (ok, out, _) = cli(&ep, &["task", "schedule", "traced_sh", "--payload", "c"]);
    assert!(ok);
    let plain: u64 = out.trim().parse().unwrap();
    assert_eq!(client.get_task(plain, false, false).await.unwrap().trace, None);

    // A malformed one: one clear line, nothing scheduled.
    let (ok, _, err) = cli(&ep, &["task", "schedule", "traced_sh", "--traceparent", "00-abc-def-01"]);
    assert!(!ok && err.contains("traceparent") && err.lines().count() == 1, "{err}");
    let e = client
        .schedule(
            0,
            pb::TaskSpec {
                trace: Some(pb::TraceContext { traceparent: "x".into(), tracestate: String::new() }),
                ..spec("traced_sh", b"")
            },
        )
        .await
        .expect_err("a malformed traceparent");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The shell worker: each attempt's command sees the task's context (the
    // node exports nothing here, so it is the one the task came with); the
    // first attempt of each asks for a retry.
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().to_str().unwrap().to_string();
    let script = format!(
        "p=$(cat); if [ ! -e {marks}/$p ]; then touch {marks}/$p; exit 75; fi; echo \"$DROVER_ATTEMPT $TRACEPARENT \
         ${{TRACESTATE-}}\""
    );
    // JSON logs at debug: the line the shell handler writes inside the
    // attempt's span carries the trace id.
    let log = dir.path().join("worker.log");
    let mut worker = std::process::Command::new(BIN)
        .args(["worker", "--endpoint", &ep, "--log-format", "json", "--callback", "traced_sh", "--concurrency", "3"])
        .args(["--", "sh", "-c", &script])
        .env("RUST_LOG", "info,drover::worker=debug")
        .env_remove("TRACEPARENT")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("drover worker");
    let want = [(by_flag, format!("2 {PARENT} k=v")), (by_env, format!("2 {env_parent} ")), (plain, "2  ".to_string())];
    for (id, result) in want {
        let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
        assert_eq!(String::from_utf8_lossy(t.result.as_deref().unwrap_or_default()).trim_end(), result.trim_end());
        assert_eq!(t.attempts, 2);
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let lines = std::fs::read_to_string(&log).unwrap();
    let ended: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "the command ended" && v["fields"]["task_id"] == by_flag)
        .collect();
    assert_eq!(ended.len(), 2, "one line per attempt:\n{lines}");
    for v in ended {
        assert_eq!(v["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{v}");
    }
}

/// A data dir of 0.1.0 (feature level 1): a traced schedule is taken
/// without its context (the old entry); once the level is raised, the
/// context is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn below_level_3_a_traced_schedule_is_taken_without_its_context() {
    let root = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-cluster-ids/node-1");
    copy_dir(&fixture, &root.path().join("node-1"));
    let mut spec = Spec::new(1, server_bin()).flags(&["--auto-register"]);
    spec.data_dir = Some(root.path().to_path_buf());
    let mut c = TestCluster::start_spec(spec).await;
    let client = c.client();
    assert_eq!(level(&client).await, 1);
    let before = client.schedule(0, traced("old_level")).await.expect("a traced schedule at level 1").task_id;
    assert_eq!(client.get_task(before, false, false).await.unwrap().trace, None);

    client.finalize_upgrade(0).await.expect("raise the level");
    assert_eq!(level(&client).await, drover::domain::feature::SUPPORTED);
    let after = client.schedule(0, traced("old_level")).await.expect("a traced schedule at level 3").task_id;
    let t = client.get_task(after, false, false).await.unwrap().trace.expect("kept at level 3");
    assert_eq!((t.traceparent.as_str(), t.tracestate.as_str()), (PARENT, "vendor=1"));
    assert_eq!(client.get_task(before, false, false).await.unwrap().trace, None);
    c.stop_all().await;
}
