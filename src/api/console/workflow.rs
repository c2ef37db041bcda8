//! A workflow's page: the graph of tasks connected to one task through
//! `after` edges (its ancestors, its descendants, and theirs), each with
//! its state, drawn as inline SVG in columns by depth.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use maud::{html, Markup};

use super::pages::{layout, state_name};
use super::ConsoleState;
use crate::pb;
use crate::pb::scheduler_server::Scheduler;

/// At most this many tasks are drawn.
pub const MAX_TASKS: usize = 200;

/// The tasks connected to `id`, by id; `truncated` when there were more
/// than [`MAX_TASKS`].
pub struct Graph {
    pub tasks: BTreeMap<u64, pb::Task>,
    pub truncated: bool,
}

/// Walk the graph from `id` in both directions.
pub async fn load(s: &ConsoleState, id: u64) -> Result<Graph, tonic::Status> {
    let mut tasks = BTreeMap::new();
    let mut queue = VecDeque::from([id]);
    let mut seen = BTreeSet::from([id]);
    let mut truncated = false;
    while let Some(next) = queue.pop_front() {
        if tasks.len() == MAX_TASKS {
            truncated = true;
            break;
        }
        let req = pb::GetTaskRequest { task_id: next, allow_stale: true, include_payload: false };
        let t = match s.scheduler.get_task(super::login::request(req)).await {
            Ok(t) => t.into_inner(),
            // A parent deleted by retention: drawn as missing.
            Err(e) if e.code() == tonic::Code::NotFound && next != id => continue,
            Err(e) => return Err(e),
        };
        let parents = t.dependencies.iter().flat_map(|d| d.parents.iter().copied());
        for n in parents.chain(t.children.iter().copied()) {
            if seen.insert(n) {
                queue.push_back(n);
            }
        }
        tasks.insert(next, t);
    }
    Ok(Graph { tasks, truncated })
}

/// Column of each task: 0 for a task without parents in the graph, else
/// one past its deepest parent. Parents always have smaller ids (a task can
/// only name tasks that exist, or earlier items of its batch), so one pass
/// in id order suffices.
pub fn depths(g: &Graph) -> BTreeMap<u64, usize> {
    let mut depth = BTreeMap::new();
    for (id, t) in &g.tasks {
        let d = t
            .dependencies
            .iter()
            .flat_map(|d| d.parents.iter())
            .filter_map(|p| depth.get(p).map(|d: &usize| d + 1))
            .max()
            .unwrap_or(0);
        depth.insert(*id, d);
    }
    depth
}

const BOX_W: f64 = 150.0;
const BOX_H: f64 = 40.0;
const GAP_X: f64 = 60.0;
const GAP_Y: f64 = 16.0;

pub fn page(root: u64, g: &Graph) -> Markup {
    let depth = depths(g);
    let mut columns: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (id, d) in &depth {
        columns.entry(*d).or_default().push(*id);
    }
    let pos = |id: u64| -> Option<(f64, f64)> {
        let d = *depth.get(&id)?;
        let row = columns.get(&d)?.iter().position(|x| *x == id)?;
        Some((d as f64 * (BOX_W + GAP_X), row as f64 * (BOX_H + GAP_Y)))
    };
    let width = columns.len() as f64 * (BOX_W + GAP_X);
    let height = columns.values().map(Vec::len).max().unwrap_or(1) as f64 * (BOX_H + GAP_Y);
    let mut edges = Vec::new();
    for (id, t) in &g.tasks {
        for p in t.dependencies.iter().flat_map(|d| d.parents.iter()) {
            if let (Some(from), Some(to)) = (pos(*p), pos(*id)) {
                edges.push((from.0 + BOX_W, from.1 + BOX_H / 2.0, to.0, to.1 + BOX_H / 2.0));
            }
        }
    }
    layout(
        &format!("Workflow of task {root}"),
        true,
        html! {
            @if g.truncated { p .error { "Only the first " (MAX_TASKS) " tasks of this graph are shown." } }
            svg #graph .workflow viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height) role="img" aria-label="workflow graph" {
                @for (x1, y1, x2, y2) in &edges {
                    line .edge x1=(x1) y1=(y1) x2=(x2) y2=(y2) {}
                }
                @for (id, t) in &g.tasks {
                    @if let Some((x, y)) = pos(*id) {
                        a href={ "/tasks/" (id) } {
                            rect class={ "node " (state_name(t.state)) @if *id == root { " root" } } x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="4" {}
                            text x=(x + 6.0) y=(y + 16.0) { (id) " " (t.callback) }
                            text x=(x + 6.0) y=(y + 32.0) .state { (state_name(t.state)) }
                        }
                    }
                }
            }
            table #workflow {
                tr { th { "task" } th { "callback" } th { "state" } th { "after" } th { "attempts" } th { "last error" } }
                @for (id, t) in &g.tasks {
                    tr {
                        td { a href={ "/tasks/" (id) } { (id) } }
                        td { (t.callback) }
                        td .state { (state_name(t.state)) }
                        td { @for p in t.dependencies.iter().flat_map(|d| d.parents.iter()) { (p) " " } }
                        td { (t.attempts) }
                        td { (t.last_error) }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, parents: &[u64], state: pb::TaskState) -> pb::Task {
        pb::Task {
            id,
            callback: "c".into(),
            state: state as i32,
            dependencies: (!parents.is_empty())
                .then(|| pb::Dependencies { parents: parents.to_vec(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_diamond_is_drawn_in_three_columns_with_four_edges() {
        let tasks = [
            task(1, &[], pb::TaskState::Succeeded),
            task(2, &[1], pb::TaskState::Succeeded),
            task(3, &[1], pb::TaskState::Failed),
            task(4, &[2, 3], pb::TaskState::Cancelled),
        ];
        let g = Graph { tasks: tasks.into_iter().map(|t| (t.id, t)).collect(), truncated: false };
        let d = depths(&g);
        assert_eq!(d.values().copied().collect::<Vec<_>>(), [0, 1, 1, 2]);
        let html = page(2, &g).into_string();
        assert_eq!(html.matches("<line class=\"edge\"").count(), 4, "{html}");
        assert!(html.contains("node failed"), "{html}");
        assert!(html.contains("node succeeded root"), "{html}");
    }
}
