//! Progress of long CLI operations: a bar (or a spinner) on a terminal;
//! with `--json` and no terminal, a JSON line per second
//! (`{"progress": WHAT, "done": N, "total": N}`); otherwise quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    /// JSON lines instead of a bar (no terminal, `--json`).
    json: bool,
    total: Option<u64>,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress towards `total` (`None`: unknown, a spinner), counted in
    /// `unit` ("bytes" draws sizes).
    pub fn new(what: &'static str, total: Option<u64>, unit: &str, json: bool) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { what, bar: None, json, total, last_line: None };
        }
        let (bar, template) = match (total, unit) {
            (Some(t), "bytes") => (ProgressBar::new(t), "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})"),
            (Some(t), _) => (ProgressBar::new(t), "{msg} [{bar:30}] {pos}/{len} ({eta})"),
            (None, "bytes") => (ProgressBar::new_spinner(), "{spinner} {msg} {bytes} ({bytes_per_sec})"),
            (None, _) => (ProgressBar::new_spinner(), "{spinner} {msg} {pos} ({elapsed})"),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { what, bar: Some(bar), json: false, total, last_line: None }
    }

    /// Now at `done` (of a total that may have changed).
    pub fn set(&mut self, done: u64, total: Option<u64>) {
        if let Some(t) = total {
            self.total = Some(t);
        }
        if let Some(bar) = &self.bar {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
        } else if self.json && self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_line = Some(Instant::now());
            eprintln!("{}", serde_json::json!({ "progress": self.what, "done": done, "total": self.total }));
        }
    }

    /// Done: clear the bar (as dropping it does).
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar of time spent against `expected` (a spinner without it), ticking
/// by itself until dropped: for runs whose length is known only as time.
pub struct Ticker {
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub fn start(what: &'static str, expected: Option<Duration>, json: bool) -> Ticker {
        let mut progress = Progress::new(what, expected.map(|d| d.as_secs().max(1)), "seconds", json);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                progress.set(started.elapsed().as_secs(), None);
            }
        });
        Ticker { task }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // Dropping the task drops its bar, which clears it.
        self.task.abort();
    }
}
