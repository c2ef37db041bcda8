//! The console's pages: maud templates (every value is escaped) over the
//! API's protobuf replies.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, DOCTYPE};

use super::TaskSearch;
use crate::pb;

/// The stylesheet, embedded in the binary.
pub const CSS: &str = include_str!("console.css");

/// Seconds between a page's own refreshes.
const REFRESH_S: u32 = 3;

/// Bytes of a payload or result shown on a task page.
const PREVIEW: usize = 4096;

pub(super) fn state_name(state: i32) -> String {
    pb::TaskState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("TASK_STATE_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(PREVIEW)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > PREVIEW {
        s.push_str(&format!("\n... ({} bytes in all)", bytes.len()));
    }
    s
}

pub(super) fn layout(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content=(REFRESH_S); }
                title { (title) " - drover" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                nav {
                    a href="/" { "drover" }
                    a href="/tasks" { "Tasks" }
                    a href="/dlq" { "Dead letters" }
                    a href="/schedules" { "Schedules" }
                    a href="/workers" { "Workers" }
                    a href="/metrics" { "Metrics" }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A form that POSTs `fields` (with the token) to `action`.
fn button(action: &str, token: &str, fields: &[(&str, String)], label: &str, confirm: Option<&str>) -> Markup {
    html! {
        form .inline method="post" action=(action) onsubmit=[confirm.map(|c| format!("return confirm({c:?})"))] {
            input type="hidden" name="token" value=(token);
            @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
            button type="submit" { (label) }
        }
    }
}

pub fn error_page(code: &str, message: &str) -> Markup {
    layout("Error", false, html! { p .error { strong { (code) } ": " (message) } })
}

pub fn overview(
    callbacks: &pb::ListCallbacksResponse,
    status: Option<&pb::ClusterStatusResponse>,
    gates: &[pb::Gate],
    recent: &[super::rates::Point],
) -> Markup {
    layout(
        "Overview",
        true,
        html! {
            h2 { "Activity" }
            (super::rates::charts(recent))
            h2 { "Cluster" }
            @match status {
                None => p .error { "no cluster status (no leader?)" },
                Some(s) => {
                    p #cluster-id { "cluster ID: " code { (if s.cluster_id.is_empty() { "(none yet)" } else { s.cluster_id.as_str() }) } }
                    p { "leader: node " (s.leader_id) ", term " (s.term) ", committed index " (s.committed_index) }
                    table #members {
                        tr { th { "node" } th { "address" } th { "role" } th { "reachable" } th { "lag (entries)" } th { "error" } }
                        @for m in &s.members {
                            tr {
                                td { (m.id) @if m.id == s.leader_id { " (leader)" } }
                                td { (m.addr) }
                                td { (if m.voter { "voter" } else { "learner" }) }
                                td { (if m.reachable { "yes" } else { "NO" }) }
                                td { (m.lag.map_or("?".to_string(), |l| l.to_string())) }
                                td .error { (m.error) }
                            }
                        }
                    }
                }
            }
            h2 { "Callbacks" }
            table #callbacks {
                tr { th { "callback" } th { "ready" } th { "scheduled" } th { "running" } th { "dead" } th { "gate" } }
                @for c in &callbacks.callbacks {
                    @let name = c.settings.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                    @let ready: u64 = c.queues.iter().map(|q| q.ready).sum();
                    @let scheduled: u64 = c.queues.iter().map(|q| q.scheduled).sum();
                    @let gate = gates.iter().filter(|g| g.callback == name && g.active).map(|g| gate_mode(g.mode)).collect::<Vec<_>>().join(", ");
                    tr {
                        td { a href={ "/callbacks/" (name) } { (name) } }
                        td { (ready) } td { (scheduled) } td { (c.running) } td { (c.dead) } td { (gate) }
                    }
                }
            }
        },
    )
}

fn gate_mode(mode: i32) -> &'static str {
    match pb::GateMode::try_from(mode) {
        Ok(pb::GateMode::Drop) => "drop",
        _ => "pause",
    }
}

pub fn callback(info: &pb::CallbackInfo, gates: &[pb::Gate], token: &str) -> Markup {
    let s = info.settings.clone().unwrap_or_default();
    let name = s.name.clone();
    layout(
        &format!("Callback {name}"),
        true,
        html! {
            p {
                "running " (info.running) " of "
                (if s.concurrency == 0 { "unlimited".to_string() } else { s.concurrency.to_string() })
                " | max attempts " (s.max_attempts)
                " | rate " (if s.rate_count == 0 { "unlimited".to_string() } else { format!("{} per {} ms (burst {})", s.rate_count, s.rate_period_ms, s.rate_burst) })
                " | dead " a href="/dlq" { (info.dead) }
            }
            h2 { "Queues per priority" }
            table #queues {
                tr { th { "priority" } th { "ready" } th { "scheduled" } }
                @for q in &info.queues { tr { td { (q.priority) } td { (q.ready) } td { (q.scheduled) } } }
            }
            @if !info.collections.is_empty() {
                h2 { "Collections" }
                table #collections {
                    tr { th { "collection" } th { "ready" } th { "scheduled" } th { "" } }
                    @for c in &info.collections {
                        tr {
                            td { (c.collection) } td { (c.ready) } td { (c.scheduled) }
                            td {
                                (button("/actions/gate", token, &[("callback", name.clone()), ("collection", c.collection.clone()), ("mode", "pause".into())], "pause", None))
                            }
                        }
                    }
                }
            }
            h2 { "Gates" }
            table #gates {
                tr { th { "target" } th { "mode" } th { "since" } th { "until" } th { "note" } th { "" } }
                @for g in gates {
                    tr {
                        td { (name) @if !g.collection.is_empty() { "/" (g.collection) } }
                        td .gate-mode { (gate_mode(g.mode)) }
                        td { (time(g.since_unix_ms)) }
                        td { (g.until_unix_ms.map_or("-".to_string(), time)) }
                        td { (g.note) }
                        td { (button("/actions/gate", token, &[("callback", name.clone()), ("collection", g.collection.clone()), ("mode", "open".into())], "open", None)) }
                    }
                }
            }
            p {
                (button("/actions/gate", token, &[("callback", name.clone()), ("mode", "pause".into())], "pause", None))
                (button("/actions/gate", token, &[("callback", name.clone()), ("mode", "drop".into())], "drop", Some("Drop cancels every pending task of this callback, and every new one. Drop?")))
                (button("/actions/gate", token, &[("callback", name.clone()), ("mode", "open".into())], "open", None))
                " " a href={ "/tasks?callback=" (name) } { "its tasks" }
            }
        },
    )
}

pub fn tasks(q: &TaskSearch, r: &pb::ListTasksResponse) -> Markup {
    layout(
        "Tasks",
        true,
        html! {
            form .search method="get" action="/tasks" {
                input name="id" placeholder="task id" value=(q.id);
                input name="callback" placeholder="callback" value=(q.callback);
                input name="collection" placeholder="collection" value=(q.collection);
                select name="state" {
                    option value="" { "any state" }
                    @for s in crate::domain::TaskState::ALL {
                        option value=(s.name()) selected[q.state == s.name()] { (s.name()) }
                    }
                }
                button type="submit" { "search" }
            }
            table #tasks {
                tr { th { "id" } th { "callback" } th { "state" } th { "priority" } th { "attempts" } th { "run at" } th { "last error" } }
                @for t in &r.tasks {
                    tr {
                        td { a href={ "/tasks/" (t.id) } { (t.id) } }
                        td { (t.callback) }
                        td .state { (state_name(t.state)) }
                        td { (t.priority) } td { (t.attempts) }
                        td { (time(t.run_at_unix_ms)) }
                        td { (t.last_error) }
                    }
                }
            }
            @if r.next_after != 0 {
                p { a href={ "/tasks?callback=" (q.callback) "&collection=" (q.collection) "&state=" (q.state) "&after=" (r.next_after) } { "next page" } }
            }
        },
    )
}

pub fn task(t: &pb::Task, token: &str) -> Markup {
    let state = state_name(t.state);
    layout(
        &format!("Task {}", t.id),
        true,
        html! {
            table #task {
                tr { th { "state" } td .state { (state) @if t.cancel_requested { " (cancel requested)" } } }
                tr { th { "callback" } td { a href={ "/callbacks/" (t.callback) } { (t.callback) } } }
                @if !t.collection.is_empty() { tr { th { "collection" } td { (t.collection) } } }
                tr { th { "priority" } td { (t.priority) } }
                tr { th { "run at" } td { (time(t.run_at_unix_ms)) } }
                tr { th { "attempts" } td { (t.attempts) } }
                tr { th { "worker" } td { (t.worker) " (fencing token " (t.fencing_token) ")" } }
                @if !t.idempotency_key.is_empty() { tr { th { "key" } td { (t.idempotency_key) } } }
                @if !t.last_error.is_empty() { tr { th { "last error" } td .error { (t.last_error) } } }
                @if let Some(d) = &t.dependencies {
                    tr { th { "after" } td { @for p in &d.parents { a href={ "/tasks/" (p) } { (p) } " " } } }
                }
                @if !t.children.is_empty() {
                    tr { th { "children" } td { @for c in &t.children { a href={ "/tasks/" (c) } { (c) } " " } } }
                }
                @if t.dependencies.is_some() || !t.children.is_empty() {
                    tr { th { "workflow" } td { a #workflow-link href={ "/workflows/" (t.id) } { "graph" } } }
                }
            }
            p {
                @if matches!(state.as_str(), "scheduled" | "ready" | "running" | "retry_wait" | "waiting") {
                    (button("/actions/cancel", token, &[("task_id", t.id.to_string())], "cancel", None))
                }
                @if state == "dead" {
                    (button("/actions/dlq", token, &[("op", "redrive".into()), ("task_id", t.id.to_string())], "redrive", None))
                }
            }
            h2 { "History" }
            ol #history .timeline {
                @for h in &t.history {
                    li { span .time { (time(h.at_unix_ms)) } " " strong { (state_name(h.state)) } " attempt " (h.attempt) }
                }
            }
            h2 { "Payload" }
            pre #payload { (preview(t.payload.as_deref().unwrap_or_default())) }
            @if let Some(r) = &t.result { h2 { "Result" } pre #result { (preview(r)) } }
        },
    )
}

pub fn dlq(tasks: &[pb::Task], token: &str) -> Markup {
    let mut by_callback: std::collections::BTreeMap<&str, Vec<&pb::Task>> = std::collections::BTreeMap::new();
    for t in tasks {
        by_callback.entry(t.callback.as_str()).or_default().push(t);
    }
    layout(
        "Dead letters",
        true,
        html! {
            @if by_callback.is_empty() { p { "No dead tasks." } }
            @for (callback, dead) in &by_callback {
                h2 { (callback) " (" (dead.len()) ")" }
                p {
                    (button("/actions/dlq", token, &[("op", "redrive".into()), ("callback", callback.to_string())], "redrive all", None))
                    (button("/actions/dlq", token, &[("op", "purge".into()), ("callback", callback.to_string())], "purge all", Some("Delete every dead task of this callback for good?")))
                }
                table .dead {
                    tr { th { "id" } th { "attempts" } th { "last error" } th { "" } }
                    @for t in dead {
                        tr {
                            td { a href={ "/tasks/" (t.id) } { (t.id) } }
                            td { (t.attempts) }
                            td { (t.last_error) }
                            td {
                                (button("/actions/dlq", token, &[("op", "redrive".into()), ("task_id", t.id.to_string())], "redrive", None))
                                (button("/actions/dlq", token, &[("op", "purge".into()), ("task_id", t.id.to_string())], "purge", Some("Delete this dead task for good?")))
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn schedules(schedules: &[pb::ScheduleInfo], token: &str) -> Markup {
    layout(
        "Schedules",
        true,
        html! {
            @if schedules.is_empty() { p { "No periodic schedules." } }
            @for s in schedules {
                @let d = s.definition.clone().unwrap_or_default();
                section .schedule {
                    h2 { (d.name) " " small { (if s.paused { "paused" } else { "active" }) } }
                    p {
                        "callback " a href={ "/callbacks/" (d.callback) } { (d.callback) } " | "
                        (if d.every_ms > 0 { format!("every {}", humantime::format_duration(Duration::from_millis(d.every_ms))) } else { format!("cron {} {}", d.cron, d.tz) })
                        " | fired " (s.fired) ", skipped " (s.skipped)
                        @if !s.note.is_empty() { " | " (s.note) }
                    }
                    p {
                        @if s.paused {
                            (button("/actions/schedule", token, &[("name", d.name.clone()), ("op", "resume".into())], "resume", None))
                        } @else {
                            (button("/actions/schedule", token, &[("name", d.name.clone()), ("op", "pause".into())], "pause", None))
                        }
                        (button("/actions/schedule", token, &[("name", d.name.clone()), ("op", "trigger".into())], "trigger", None))
                    }
                    p { "next: " @for n in &s.next { (time(n.at_unix_ms)) "  " } }
                    table .runs {
                        tr { th { "slot" } th { "task" } th { "state" } }
                        @for r in s.runs.iter().rev() {
                            tr {
                                td { (r.slot.as_ref().map_or("-".to_string(), |sl| time(sl.at_unix_ms))) }
                                td { a href={ "/tasks/" (r.task_id) } { (r.task_id) } }
                                td .state { (state_name(r.state)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn workers(workers: &[pb::WorkerSession]) -> Markup {
    layout(
        "Workers",
        true,
        html! {
            @if workers.is_empty() { p { "No workers connected to the leader." } }
            table #workers {
                tr { th { "worker" } th { "callback" } th { "credits" } th { "running" } th { "state" } th { "last heard" } }
                @for w in workers {
                    @for c in &w.callbacks {
                        tr {
                            td { (w.worker_id) }
                            td { a href={ "/callbacks/" (c.callback) } { (c.callback) } }
                            td { (c.credits) }
                            td { @for id in &c.running { a href={ "/tasks/" (id) } { (id) } " " } }
                            td { (if w.draining { "draining" } else { "active" }) }
                            td { (w.idle_ms) " ms ago" }
                        }
                    }
                }
            }
        },
    )
}
