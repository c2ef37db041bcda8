//! The shell worker's handler: run a command per task.
//!
//! - the payload goes to the command's stdin;
//! - `DROVER_TASK_ID`, `DROVER_ATTEMPT`, `DROVER_FENCING_TOKEN` and
//!   `DROVER_CALLBACK` are in its environment;
//! - `TRACEPARENT` (and `TRACESTATE`) hold the attempt's W3C trace
//!   context, for a task scheduled with one;
//! - for a task scheduled after others, `DROVER_PARENT_RESULTS` names a
//!   JSON file with its parents' states and results (see
//!   [`parent_results_json`]), deleted when the command ends;
//! - stdout, up to a limit, is the task's result (the rest is discarded);
//! - exit 0 is success, exit 75 (EX_TEMPFAIL) is retriable, any other exit
//!   (or death by a signal) is fatal, with stderr's tail as the error;
//! - the command runs in its own process group, which is killed (SIGTERM,
//!   then SIGKILL) on timeout, cancel, or loss of the lease.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{TaskContext, TaskResult};
use crate::domain::dependency::Upstream;

/// Exit code for "try again later" (sysexits.h EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Bytes of stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

#[derive(Debug, Clone)]
pub struct ShellHandler {
    pub program: String,
    pub args: Vec<String>,
    /// Most stdout bytes kept as the result.
    pub max_output: usize,
    /// Between SIGTERM and SIGKILL when stopping the command.
    pub kill_grace: Duration,
}

/// Kills a process group when dropped: however the handler ends (returns,
/// is aborted, loses its lease), the command does not outlive it.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    /// Signal the whole group (ignoring a group that is already gone).
    fn signal(&self, sig: Signal) {
        if self.pgid > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}

async fn read_limited(mut r: impl AsyncReadExt + Unpin, keep: usize, tail: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > keep {
                    if tail {
                        out.drain(..out.len() - keep);
                    } else {
                        // Keep reading (and discarding) so the command never blocks on a full pipe.
                        out.truncate(keep);
                    }
                }
            }
        }
    }
    out
}

/// The parents' file: `{"ended": {"succeeded": N, "failed": N, "dead": N,
/// "cancelled": N}, "omitted": N, "parents": [{"task_id": N, "state":
/// "succeeded", "result": "text" or null, "result_base64": "..." or null}]}`.
/// `result` is set when the result is UTF-8, `result_base64` always when
/// there is a result.
pub fn parent_results_json(up: &Upstream) -> serde_json::Value {
    use base64::Engine;
    let parents: Vec<_> = up
        .parents
        .iter()
        .map(|p| {
            serde_json::json!({
                "task_id": p.task_id,
                "state": p.state.name(),
                "result": p.result.as_deref().and_then(|r| std::str::from_utf8(r).ok()),
                "result_base64": p.result.as_deref().map(|r| base64::engine::general_purpose::STANDARD.encode(r)),
            })
        })
        .collect();
    serde_json::json!({
        "ended": {
            "succeeded": up.ended.succeeded,
            "failed": up.ended.failed,
            "dead": up.ended.dead,
            "cancelled": up.ended.cancelled,
        },
        "omitted": up.omitted,
        "parents": parents,
    })
}

/// A file deleted when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ShellHandler {
    pub async fn run(&self, ctx: TaskContext) -> TaskResult {
        let mut cmd = Command::new(&self.program);
        let mut _parents_file = None;
        if let Some(up) = &ctx.parent_results {
            let path = std::env::temp_dir().join(format!(
                "drover-parents-{}-{}-{}.json",
                std::process::id(),
                ctx.task_id,
                ctx.fencing_token
            ));
            let body = parent_results_json(up).to_string();
            if let Err(e) = tokio::fs::write(&path, body).await {
                return TaskResult::retry(format!("cannot write the parents' results to {}: {e}", path.display()));
            }
            cmd.env("DROVER_PARENT_RESULTS", &path);
            _parents_file = Some(TempFile(path));
        }
        // The attempt's trace context (W3C): a traced program continues
        // the task's trace. Never inherited from the worker's own
        // environment, which belongs to no task.
        cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
        if let Some(trace) = &ctx.trace {
            cmd.env("TRACEPARENT", &trace.traceparent);
            if !trace.tracestate.is_empty() {
                cmd.env("TRACESTATE", &trace.tracestate);
            }
        }
        cmd.args(&self.args)
            .env("DROVER_TASK_ID", ctx.task_id.to_string())
            .env("DROVER_ATTEMPT", ctx.attempt.to_string())
            .env("DROVER_FENCING_TOKEN", ctx.fencing_token.to_string())
            .env("DROVER_CALLBACK", &ctx.callback)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return TaskResult::Fatal(format!("cannot start {:?}: {e}", self.program)),
        };
        let mut guard = GroupGuard { pgid: child.id().map_or(0, |p| p as i32), armed: true };
        if let Some(mut stdin) = child.stdin.take() {
            let payload = ctx.payload.clone();
            tokio::spawn(async move {
                // A command that does not read its stdin is fine.
                let _ = stdin.write_all(&payload).await;
            });
        }
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_limited(s, self.max_output, false)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_limited(s, STDERR_TAIL, true)));
        let status = tokio::select! {
            s = child.wait() => s,
            _ = ctx.cancel.cancelled() => {
                guard.signal(Signal::SIGTERM);
                if tokio::time::timeout(self.kill_grace, child.wait()).await.is_err() {
                    guard.signal(Signal::SIGKILL);
                }
                return TaskResult::retry("stopped: the task was cancelled or timed out");
            }
        };
        // The command is done; kill any children it left in its group.
        guard.signal(Signal::SIGKILL);
        guard.armed = false;
        let output = match stdout {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let err_tail = match stderr {
            Some(h) => String::from_utf8_lossy(&h.await.unwrap_or_default()).trim().to_string(),
            None => String::new(),
        };
        let describe = |what: String| if err_tail.is_empty() { what } else { format!("{what}: {err_tail}") };
        if let Ok(s) = &status {
            // Inside the attempt's span: the line carries its trace id.
            tracing::debug!(task_id = ctx.task_id, attempt = ctx.attempt, exit = s.code(), "the command ended");
        }
        match status {
            Err(e) => TaskResult::retry(format!("waiting for the command: {e}")),
            Ok(s) if s.success() => TaskResult::Success(output),
            Ok(s) => match s.code() {
                Some(EXIT_RETRY) => TaskResult::retry(describe(format!("exit {EXIT_RETRY} (retry)"))),
                Some(code) => TaskResult::Fatal(describe(format!("exit {code}"))),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    TaskResult::Fatal(describe(format!("killed by signal {}", s.signal().unwrap_or(0))))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(payload: &[u8]) -> TaskContext {
        let (_tx, lease) = tokio::sync::watch::channel(tokio::time::Instant::now() + Duration::from_secs(60));
        TaskContext {
            task_id: 7,
            callback: "cb".into(),
            attempt: 2,
            fencing_token: 99,
            payload: payload.to_vec(),
            priority: 0,
            timeout: Duration::from_secs(60),
            parent_results: None,
            trace: None,
            links: Vec::new(),
            cancel: CancellationToken::new(),
            lease,
        }
    }

    #[tokio::test]
    async fn the_attempts_trace_context_is_in_traceparent_and_nothing_else_is() {
        let mut c = ctx(b"");
        c.trace = crate::domain::trace::TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "congo=t61rcWkgMzE",
        )
        .unwrap();
        let r = sh("echo \"$TRACEPARENT $TRACESTATE\"", 1024).run(c).await;
        assert_eq!(
            r,
            TaskResult::Success(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 congo=t61rcWkgMzE\n".to_vec()
            )
        );
        // Without one, none (not even the worker's own).
        let r = sh("echo \"[${TRACEPARENT-unset}]\"", 1024).run(ctx(b"")).await;
        assert_eq!(r, TaskResult::Success(b"[unset]\n".to_vec()));
    }

    #[tokio::test]
    async fn parents_results_arrive_as_a_json_file_that_is_removed_afterwards() {
        use crate::domain::dependency::{Counts, ParentResult};
        use crate::domain::TaskState;
        let mut c = ctx(b"");
        c.parent_results = Some(Upstream {
            ended: Counts { succeeded: 1, failed: 0, dead: 1, cancelled: 0 },
            parents: vec![
                ParentResult { task_id: 3, state: TaskState::Succeeded, result: Some(b"hello".to_vec()) },
                ParentResult { task_id: 4, state: TaskState::Dead, result: None },
            ],
            omitted: 0,
        });
        let r = sh("cat \"$DROVER_PARENT_RESULTS\"; echo; echo \"$DROVER_PARENT_RESULTS\"", 1 << 16).run(c).await;
        let TaskResult::Success(out) = r else { panic!("{r:?}") };
        let out = String::from_utf8(out).unwrap();
        let (json, path) = out.trim_end().split_once('\n').unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["ended"]["succeeded"], 1);
        assert_eq!(v["ended"]["dead"], 1);
        assert_eq!(v["parents"][0]["task_id"], 3);
        assert_eq!(v["parents"][0]["result"], "hello");
        assert_eq!(v["parents"][0]["result_base64"], "aGVsbG8=");
        assert_eq!(v["parents"][1]["state"], "dead");
        assert!(v["parents"][1]["result"].is_null());
        assert!(!std::path::Path::new(path).exists(), "the file is removed after the run");
        // Without parents there is no file.
        let r = sh("echo \"[$DROVER_PARENT_RESULTS]\"", 100).run(ctx(b"")).await;
        assert_eq!(r, TaskResult::Success(b"[]\n".to_vec()));
    }

    fn sh(script: &str, max_output: usize) -> ShellHandler {
        ShellHandler {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            max_output,
            kill_grace: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn exit_codes_map_to_outcomes_and_env_and_stdin_arrive() {
        let r = sh("cat; echo \" $DROVER_TASK_ID $DROVER_ATTEMPT $DROVER_FENCING_TOKEN $DROVER_CALLBACK\"", 1024)
            .run(ctx(b"in"))
            .await;
        assert_eq!(r, TaskResult::Success(b"in 7 2 99 cb\n".to_vec()));
        assert!(
            matches!(sh("echo boom >&2; exit 75", 10).run(ctx(b"")).await, TaskResult::Retry { error, .. } if error.contains("boom"))
        );
        assert!(matches!(sh("exit 3", 10).run(ctx(b"")).await, TaskResult::Fatal(e) if e.contains("exit 3")));
        assert!(matches!(sh("kill -9 $$", 10).run(ctx(b"")).await, TaskResult::Fatal(e) if e.contains("signal 9")));
    }

    #[tokio::test]
    async fn big_stdout_is_cut_at_the_limit_without_blocking_the_command() {
        let r = sh("head -c 1000000 /dev/zero", 100).run(ctx(b"")).await;
        assert_eq!(r, TaskResult::Success(vec![0u8; 100]));
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        let c = ctx(b"");
        let cancel = c.cancel.clone();
        // The grandchild would touch the marker after 1 s if it survived.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let run = tokio::spawn(async move { sh(&script, 10).run(c).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
        assert!(matches!(r, TaskResult::Retry { .. }));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the grandchild was killed with the group");
    }
}
