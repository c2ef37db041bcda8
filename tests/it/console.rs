//! The web console in a real browser: headless Chromium against a live
//! 3-node cluster loads every page, the test checks what each shows, saves
//! a screenshot of each under `target/ui/`, and presses buttons through
//! the DevTools protocol (pause a callback, cancel a task) and checks the
//! effect with the CLI. Form POSTs without the console's token are refused.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::testkit::launcher::{free_port, Spec};

const CHROMIUM: &str = "chromium";

/// A raw HTTP request: (status, body). Reads the body by its
/// Content-Length (a server may keep the connection open), within 10 s.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|n| rest.len() >= n) {
                    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return Some((code, rest.to_string()));
                }
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                return Some((
                    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                    rest.to_string(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call).await.ok().flatten().unwrap_or((0, String::new()))
}

/// Run a one-shot headless Chromium (killed after 60 s).
fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(profile.path().join("out")).unwrap())
        .stderr(std::fs::File::create(profile.path().join("err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CHROMIUM} ({e}): scripts/prereqs.sh installs it"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().expect("chromium status");
    let read = |name: &str| std::fs::read(profile.path().join(name)).unwrap_or_default();
    std::process::Output { status, stdout: read("out"), stderr: read("err") }
}

/// The page as the browser built it.
fn dump_dom(url: &str) -> String {
    let o = chromium(&["--dump-dom", url]);
    assert!(o.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn screenshot(url: &str, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let o = chromium(&[&format!("--screenshot={}", file.display()), "--window-size=1280,900", url]);
    assert!(o.status.success() && file.exists(), "screenshot of {url}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A browser under DevTools control, killed on drop.
struct Browser {
    child: Child,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let port = free_port().unwrap();
        let profile = tempfile::tempdir().unwrap().keep();
        let child = Command::new(CHROMIUM)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMIUM} ({e}): scripts/prereqs.sh installs it"));
        Browser { child, port }
    }

    /// Open `url` in a new tab; its DevTools websocket.
    async fn open(&self, url: &str) -> Tab {
        let devtools = format!("127.0.0.1:{}", self.port);
        let body = wait_until(Duration::from_secs(20), "chromium's DevTools endpoint", || async {
            tokio::net::TcpStream::connect(&devtools).await.ok()?;
            let (code, body) = http(&devtools, "PUT", &format!("/json/new?{url}"), "").await;
            (code == 200).then_some(body)
        })
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("a DevTools target");
        let ws = v["webSocketDebuggerUrl"].as_str().expect("a websocket url").to_string();
        let (socket, _) = tokio_tungstenite::connect_async(ws).await.expect("DevTools websocket");
        Tab { socket, next: 1 }
    }
}

struct Tab {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
}

impl Tab {
    /// Evaluate `js` in the page; its value.
    async fn eval(&mut self, js: &str) -> serde_json::Value {
        let id = self.next;
        self.next += 1;
        let msg = serde_json::json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": js, "returnByValue": true}});
        self.socket.send(Message::Text(msg.to_string().into())).await.expect("send");
        while let Some(m) = self.socket.next().await {
            let Ok(Message::Text(t)) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            if v["id"] == id {
                return v["result"]["result"]["value"].clone();
            }
        }
        panic!("the DevTools socket closed");
    }

    /// Wait until the page has loaded and `js` is true.
    async fn wait_for(&mut self, js: &str, what: &str) {
        for _ in 0..200 {
            if self.eval(&format!("document.readyState == 'complete' && ({js})")).await == serde_json::json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_every_page_and_its_buttons_work_in_a_real_browser() {
    let mut spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    spec.http_base_port = Some(0);
    let c = TestCluster::start_spec(spec).await;
    let ep = endpoints(&c);
    let web = c.nodes[1].http_addr.clone().expect("http");
    let base = format!("http://{web}");
    let schedule = |args: &[&str]| {
        let mut a = vec!["task", "schedule"];
        a.extend_from_slice(args);
        let (ok, out, err) = cli(&ep, &a);
        assert!(ok, "{err}");
        out.trim().parse::<u64>().expect("an id")
    };
    let id = schedule(&["ui", "--payload", "hello from the test"]);
    let later = schedule(&["ui", "--delay", "1h", "--collection", "promo"]);
    let (ok, _, err) = cli(&ep, &["callback", "register", "dies", "--max-attempts", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&ep, &["schedule", "create", "nightly", "--callback", "ui", "--cron", "0 2 * * *"]);
    assert!(ok, "{err}");
    // A workflow (a diamond whose right branch fails), run by a worker, so
    // that the overview has starts to chart and the workflow page states.
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        r#"[{"ref":"a","callback":"flow"},{"ref":"b","callback":"flow","after":["a"]},
            {"ref":"c","callback":"flow-fails","after":["a"]},{"callback":"flow","after":["b","c"]}]"#,
    )
    .unwrap();
    let (ok, _, err) = cli(&ep, &["callback", "register", "flow-fails", "--max-attempts", "1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&ep, &["task", "schedule-batch", "--file", graph.to_str().unwrap()]);
    assert!(ok, "{err}");
    let flow: Vec<u64> = out.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(flow.len(), 4, "{out}");
    let _ok_worker =
        WorkerProc::start(&ep, dir.path().join("w1.log"), &["--callback", "flow", "--id", "w1", "--builtin", "noop"]);
    let _failing = WorkerProc::start(
        &ep,
        dir.path().join("w2.log"),
        &["--callback", "flow-fails", "--id", "w2", "--", "sh", "-c", "exit 3"],
    );
    let ended = |t: u64| {
        let ep = ep.clone();
        async move {
            let (ok, out, _) = cli(&ep, &["task", "get", &t.to_string(), "--json"]);
            (ok && ["succeeded", "failed", "dead", "cancelled"].iter().any(|s| out.contains(&format!("\"{s}\""))))
                .then_some(())
        }
    };
    wait_until(Duration::from_secs(60), "the workflow to end", || ended(flow[3])).await;
    // The overview's rates (sampled every 2 s) come to show those starts.
    wait_until(Duration::from_secs(30), "a schedule-to-start p95 in /api/rates", || async {
        let (code, body) = http(&web, "GET", "/api/rates", "").await;
        let points: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        (code == 200
            && points.iter().any(|p| p["start_p95_s"].is_number())
            && points.iter().any(|p| p["started_per_s"].as_f64().is_some_and(|r| r > 0.0)))
        .then_some(())
    })
    .await;

    // Every page, as the browser renders it.
    let pages: [(&str, String, Vec<String>); 8] = [
        (
            "overview",
            "/".into(),
            vec!["Overview".into(), "/callbacks/ui".into(), "(leader)".into(), "class=\"promise\"".into()],
        ),
        ("callback", "/callbacks/ui".into(), vec!["Callback ui".into(), "promo".into(), "Queues per priority".into()]),
        (
            "tasks",
            "/tasks?callback=ui".into(),
            vec![format!("href=\"/tasks/{id}\""), format!("href=\"/tasks/{later}\"")],
        ),
        ("task", format!("/tasks/{id}"), vec![format!("Task {id}"), "hello from the test".into(), "History".into()]),
        ("dlq", "/dlq".into(), vec!["Dead letters".into(), "No dead tasks.".into()]),
        ("schedules", "/schedules".into(), vec!["nightly".into(), "cron 0 2 * * *".into()]),
        ("workers", "/workers".into(), vec!["Workers".into(), "w1".into(), "flow-fails".into()]),
        (
            "workflow",
            format!("/workflows/{}", flow[1]),
            vec![
                format!("Workflow of task {}", flow[1]),
                "node succeeded root".into(),
                "node failed".into(),
                "node cancelled".into(),
                "<line class=\"edge\"".into(),
            ],
        ),
    ];
    for (name, path, wants) in &pages {
        let dom = dump_dom(&format!("{base}{path}"));
        for want in wants {
            assert!(dom.contains(want.as_str()), "{name} page lacks {want:?}:\n{dom}");
        }
        screenshot(&format!("{base}{path}"), name);
    }
    let overview = dump_dom(&format!("{base}/"));
    // The p95 line has points (it is empty before any start).
    assert!(
        overview.contains("class=\"p95\" points=\"") && !overview.contains("class=\"p95\" points=\"\""),
        "{overview}"
    );
    let task = dump_dom(&format!("{base}/tasks/{}", flow[3]));
    assert!(task.contains(&format!("href=\"/workflows/{}\"", flow[3])), "{task}");
    let tasks = dump_dom(&format!("{base}/tasks?callback=ui&state=scheduled"));
    assert!(
        tasks.contains(&format!("href=\"/tasks/{later}\"")) && !tasks.contains(&format!("href=\"/tasks/{id}\"")),
        "{tasks}"
    );

    // Press "pause" on the callback page: `drover gate list` shows it.
    let browser = Browser::start();
    let mut tab = browser.open(&format!("{base}/callbacks/ui")).await;
    tab.wait_for("document.querySelector('h1') != null", "the callback page").await;
    let pressed = tab
        .eval(
            "(() => { const b = [...document.querySelectorAll('form[action=\"/actions/gate\"]')]
                .find(f => !f.querySelector('input[name=collection]') && f.querySelector('input[name=mode]').value == 'pause');
              b.querySelector('button').click(); return true; })()",
        )
        .await;
    assert_eq!(pressed, serde_json::json!(true));
    let gates = wait_until(Duration::from_secs(20), "the pause to show in `gate list`", || async {
        let (ok, out, _) = cli(&ep, &["gate", "list", "--json"]);
        (ok && out.contains("\"pause\"") && out.contains("\"ui\"")).then_some(out)
    })
    .await;
    assert!(gates.contains("web console"), "{gates}");
    tab.wait_for("document.querySelector('td.gate-mode') != null", "the gate on the page").await;

    // Press "cancel" on the delayed task's page.
    let mut tab = browser.open(&format!("{base}/tasks/{later}")).await;
    tab.wait_for("document.querySelector('form[action=\"/actions/cancel\"]') != null", "the cancel button").await;
    tab.eval("document.querySelector('form[action=\"/actions/cancel\"] button').click()").await;
    wait_until(Duration::from_secs(20), "the task to be cancelled", || async {
        let (ok, out, _) = cli(&ep, &["task", "get", &later.to_string(), "--json"]);
        (ok && out.contains("\"cancelled\"")).then_some(())
    })
    .await;
    drop(browser);

    // A form from elsewhere (no token, or another site) changes nothing.
    let (code, _) = http(&web, "POST", "/actions/cancel", &format!("token=guess&task_id={id}")).await;
    assert_eq!(code, 403);
    let (ok, out, _) = cli(&ep, &["task", "get", &id.to_string(), "--json"]);
    assert!(ok && !out.contains("\"cancelled\""), "{out}");
    let (code, _) = http(&web, "GET", "/tasks/999999", "").await;
    assert_eq!(code, 404);
}
