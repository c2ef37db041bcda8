//! The command line's contract: names, output, exit codes, one-line errors.

use std::process::{Command, Output};

use crate::harness::{TestCluster, BIN};

fn drover(endpoint: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("DROVER_ENDPOINT", endpoint).env_remove("RUST_LOG").output().expect("run drover")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn assert_one_line_error(o: &Output, mention: &str) {
    assert!(!o.status.success(), "must fail: {}", stdout(o));
    let err = stderr(o);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "no panic: {err}");
    assert!(err.to_lowercase().contains(&mention.to_lowercase()), "{err:?} should mention {mention:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_get_and_status_from_the_command_line() {
    let c = TestCluster::start(3, &[]).await;
    // The first endpoint is dead: the CLI moves on to the next.
    let endpoints = format!("127.0.0.1:1,{}", c.nodes.iter().map(|n| n.addr.as_str()).collect::<Vec<_>>().join(","));
    let o = drover(
        &endpoints,
        &["task", "schedule", "send_email", "--payload", "{\"to\":\"a@b.c\"}", "--priority", "5", "--delay", "1h"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id: u64 = stdout(&o).parse().expect("schedule prints the id");

    let o = drover(&endpoints, &["task", "get", &id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["id"], id);
    assert_eq!(v["callback"], "send_email");
    assert_eq!(v["state"], "scheduled");
    assert_eq!(v["priority"], 5);
    assert_eq!(v["payload_size"], 14);
    let delay = v["run_at_unix_ms"].as_u64().unwrap() - v["created_at_unix_ms"].as_u64().unwrap();
    assert_eq!(delay, 3_600_000);

    let o = drover(&endpoints, &["task", "schedule", "x", "--key", "k1", "--json"]);
    let first: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let o = drover(&endpoints, &["task", "schedule", "x", "--key", "k1", "--json"]);
    let second: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(first["task_id"], second["task_id"]);
    assert_eq!((first["created"].as_bool(), second["created"].as_bool()), (Some(true), Some(false)));

    let o = drover(&endpoints, &["cluster", "status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    assert!(v["leader_id"].as_u64().unwrap() >= 1);
    let o = drover(&endpoints, &["cluster", "status"]);
    assert!(stdout(&o).contains("leader: node"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_mistakes_print_one_clear_line_and_exit_non_zero() {
    let c = TestCluster::start(1, &[]).await;
    let ep = c.nodes[0].addr.clone();
    assert_one_line_error(&drover(&ep, &["task", "schedule", "bad name"]), "callback name");
    assert_one_line_error(&drover(&ep, &["task", "schedule", "x", "--delay", "soon"]), "duration");
    assert_one_line_error(&drover(&ep, &["task", "schedule", "x", "--at", "tomorrow"]), "RFC 3339");
    assert_one_line_error(
        &drover(&ep, &["task", "schedule", "x", "--payload-file", "/nonexistent/file"]),
        "/nonexistent/file",
    );
    assert_one_line_error(&drover(&ep, &["task", "get", "424242"]), "not found");
    assert_one_line_error(&drover(&ep, &["task", "get", "abc"]), "invalid value");
    // Nothing listens there: a clear message, after trying, not a hang.
    let mut cmd = Command::new(BIN);
    cmd.args(["task", "get", "1", "--endpoint", "127.0.0.1:1"]);
    let o = cmd.output().unwrap();
    assert_one_line_error(&o, "unavailable");
    // Server flag mistakes.
    let o = Command::new(BIN)
        .args(["server", "--id", "0", "--listen", "127.0.0.1:0", "--data-dir", "/tmp/x"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "--id");
    let o = Command::new(BIN)
        .args(["server", "--id", "2", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&c.nodes[0].data_dir)
        .output()
        .unwrap();
    assert_one_line_error(&o, "belongs to node 1");
}

/// `drover server --config FILE.toml`: keys are the long flag names; a flag
/// beats the environment, which beats the file, which beats the default;
/// an unknown key is refused by name; and a node started from a file
/// serves with its values (JSON logs included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_config_file_sets_flags_under_their_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::testkit::launcher::free_port().unwrap();
    let http = crate::testkit::launcher::free_port().unwrap();
    let file = dir.path().join("node.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{port}\"\ndata-dir = {:?}\nbootstrap = true\nmax-batch = 7\nmax-payload = 2048\nhttp-listen = \"127.0.0.1:{http}\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["server", "--config", file.to_str().unwrap(), "--max-batch", "9", "--print-config"])
        .env("DROVER_HEARTBEAT", "150ms")
        .output()
        .unwrap();
    let printed = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(printed.contains("max-batch = 9  # flag"), "{printed}");
    assert!(printed.contains("max-payload = 2048  # file"), "{printed}");
    assert!(printed.contains(&format!("listen = \"127.0.0.1:{port}\"  # file")), "{printed}");
    assert!(printed.contains("election-timeout = \"300ms\"  # default"), "{printed}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_payload = 1\n").unwrap();
    let o = Command::new(BIN).args(["server", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert_one_line_error(&o, "unknown key \"max_payload\"");

    // A node from the file alone, logging JSON, serving its HTTP endpoint.
    let node = Command::new(BIN)
        .args(["server", "--config", file.to_str().unwrap(), "--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let endpoint = format!("127.0.0.1:{port}");
    crate::harness::wait_until(std::time::Duration::from_secs(20), "the configured node to lead", || {
        let endpoint = endpoint.clone();
        async move {
            let o = drover(&endpoint, &["callback", "register", "c"]);
            o.status.success().then_some(())
        }
    })
    .await;
    let o = drover(&endpoint, &["task", "schedule", "c", "--payload", &"x".repeat(100)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = drover(&endpoint, &["task", "schedule", "c", "--payload", &"x".repeat(4096)]);
    assert_one_line_error(&o, "2048");
    let metrics = std::net::TcpStream::connect(format!("127.0.0.1:{http}"));
    assert!(metrics.is_ok(), "the HTTP endpoint from the file listens");
    crate::harness::signal_pid(node.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let out = node.wait_with_output().unwrap();
    let first = String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").to_string();
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {first}"));
    assert!(v.get("level").is_some(), "{first}");
}

/// `drover ... | head`: a reader that is gone ends the CLI quietly with
/// 141 (as SIGPIPE would), not with a panic.
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let data = dir.path().join("d").display().to_string();
    let o = Command::new(BIN)
        .args(["server", "--id", "1", "--listen", "127.0.0.1:7999", "--data-dir", &data, "--print-config"])
        .stdout(writer)
        .output()
        .expect("run drover");
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
