//! The overview's recent activity: the process-wide totals
//! ([`crate::metrics::totals`]) sampled every [`SAMPLE`] for the last
//! [`KEEP`], turned into tasks scheduled, started and finished per second
//! and the schedule-to-start p95 over a sliding minute, and drawn as inline
//! SVG (no JavaScript).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{self, TotalsSnapshot};

/// How often the totals are read.
pub const SAMPLE: Duration = Duration::from_secs(2);
/// How far back the overview looks.
const KEEP: Duration = Duration::from_secs(300);
/// The window of the p95 at each point.
const P95_WINDOW: Duration = Duration::from_secs(60);
/// ATF's promise: 95% of tasks start within 5 s of their scheduled time.
const PROMISE_S: f64 = 5.0;

/// Readings of the totals, oldest first.
#[derive(Default)]
pub struct History {
    samples: VecDeque<(u64, TotalsSnapshot)>,
}

/// One point of the overview's charts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at_unix_ms: u64,
    pub scheduled_per_s: f64,
    pub started_per_s: f64,
    pub finished_per_s: f64,
    /// Over the minute before this point; `None` when nothing started.
    pub start_p95_s: Option<f64>,
}

impl History {
    pub fn record(&mut self, at_unix_ms: u64, totals: TotalsSnapshot) {
        self.samples.push_back((at_unix_ms, totals));
        let keep = (KEEP.as_millis() / SAMPLE.as_millis()) as usize + 1;
        while self.samples.len() > keep {
            self.samples.pop_front();
        }
    }

    /// A point per sample after the first.
    pub fn points(&self) -> Vec<Point> {
        let window = (P95_WINDOW.as_millis() / SAMPLE.as_millis()) as usize;
        let s: Vec<_> = self.samples.iter().collect();
        (1..s.len())
            .map(|i| {
                let (at, now) = s[i];
                let (prev_at, prev) = s[i - 1];
                let secs = (at.saturating_sub(*prev_at) as f64 / 1000.0).max(0.001);
                let rate = |f: fn(&TotalsSnapshot) -> u64| f(now).saturating_sub(f(prev)) as f64 / secs;
                let (_, from) = s[i.saturating_sub(window)];
                let delays: Vec<u64> =
                    now.start_delay.iter().zip(&from.start_delay).map(|(n, f)| n.saturating_sub(*f)).collect();
                Point {
                    at_unix_ms: *at,
                    scheduled_per_s: rate(|t| t.scheduled),
                    started_per_s: rate(|t| t.started),
                    finished_per_s: rate(|t| t.finished),
                    start_p95_s: metrics::start_delay_p95(&delays),
                }
            })
            .collect()
    }
}

/// Start sampling into a new history, on `tasks`; the sampler stops at
/// `stop` or once the history is dropped.
pub fn spawn_sampler(tasks: &TaskTracker, stop: CancellationToken) -> Arc<Mutex<History>> {
    let history = Arc::new(Mutex::new(History::default()));
    let weak: Weak<Mutex<History>> = Arc::downgrade(&history);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(history) = weak.upgrade() else { return };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
            h.record(now, metrics::totals());
        }
    });
    history
}

const W: f64 = 600.0;
const H: f64 = 120.0;

/// A polyline of `values` (one per point) scaled to `top`.
fn polyline(values: &[Option<f64>], top: f64, class: &str) -> Markup {
    let n = values.len().max(2) - 1;
    let mut d = String::new();
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            let x = W * i as f64 / n as f64;
            let y = H - H * (v / top).min(1.0);
            d.push_str(&format!("{x:.1},{y:.1} "));
        }
    }
    html! { polyline class=(class) points=(d) {} }
}

/// The overview's two charts, with their current values.
pub fn charts(points: &[Point]) -> Markup {
    let last = points.last();
    let series = |f: fn(&Point) -> f64| points.iter().map(|p| Some(f(p))).collect::<Vec<_>>();
    let scheduled = series(|p| p.scheduled_per_s);
    let started = series(|p| p.started_per_s);
    let finished = series(|p| p.finished_per_s);
    let top_rate = scheduled.iter().chain(&started).chain(&finished).flatten().fold(1.0f64, |a, b| a.max(*b)) * 1.1;
    let p95: Vec<Option<f64>> = points.iter().map(|p| p.start_p95_s).collect();
    let top_p95 = p95.iter().flatten().fold(PROMISE_S * 2.0, |a, b| a.max(*b));
    let promise_y = H - H * PROMISE_S / top_p95;
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    html! {
        div #rates .chart {
            p {
                "per second: "
                span .scheduled { "scheduled " (fmt(last.map(|p| p.scheduled_per_s))) } ", "
                span .started { "started " (fmt(last.map(|p| p.started_per_s))) } ", "
                span .finished { "finished " (fmt(last.map(|p| p.finished_per_s))) }
                " (last " (KEEP.as_secs() / 60) " minutes, up to " (format!("{top_rate:.0}")) "/s)"
            }
            svg viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label="tasks per second" {
                (polyline(&scheduled, top_rate, "scheduled"))
                (polyline(&started, top_rate, "started"))
                (polyline(&finished, top_rate, "finished"))
            }
        }
        div #p95 .chart {
            p {
                "schedule-to-start p95 over the last minute: "
                strong #p95-now { (last.and_then(|p| p.start_p95_s).map_or("no starts".to_string(), |v| format!("{v:.2} s"))) }
                " (the promise: 95% within " (PROMISE_S) " s)"
            }
            svg viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label="schedule-to-start p95" {
                line .promise x1="0" x2=(W) y1=(format!("{promise_y:.1}")) y2=(format!("{promise_y:.1}")) {}
                text x="4" y=(format!("{:.1}", promise_y - 3.0)) { "5 s" }
                (polyline(&p95, top_p95, "p95"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(scheduled: u64, started: u64, finished: u64, fast: u64, slow: u64) -> TotalsSnapshot {
        let mut t = TotalsSnapshot { scheduled, started, finished, ..Default::default() };
        t.start_delay[0] = fast;
        t.start_delay[11] = slow;
        t
    }

    #[test]
    fn points_are_rates_between_samples_and_a_windowed_p95() {
        let mut h = History::default();
        h.record(0, at(0, 0, 0, 0, 0));
        h.record(2_000, at(20, 10, 4, 10, 0));
        h.record(4_000, at(40, 30, 4, 10, 10));
        let p = h.points();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].scheduled_per_s, p[0].started_per_s, p[0].finished_per_s), (10.0, 5.0, 2.0));
        assert_eq!((p[1].scheduled_per_s, p[1].started_per_s, p[1].finished_per_s), (10.0, 10.0, 0.0));
        assert!(p[0].start_p95_s.is_some_and(|v| v < 0.001));
        // Half the starts of the window were slow: the p95 is past 5 s.
        assert!(p[1].start_p95_s.is_some_and(|v| v > 5.0), "{:?}", p[1].start_p95_s);
        let svg = charts(&p).into_string();
        assert!(svg.contains("class=\"promise\""), "{svg}");
        assert!(svg.contains("started 10.0"), "{svg}");
    }

    #[test]
    fn history_keeps_only_the_last_minutes() {
        let mut h = History::default();
        for i in 0..1000 {
            h.record(i * 2_000, TotalsSnapshot::default());
        }
        assert_eq!(h.samples.len(), 151);
        assert_eq!(h.points().len(), 150);
    }
}
