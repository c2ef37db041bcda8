//! One run of one seed: build the simulated cluster, run the workload
//! under the seed's faults while checking the invariants, heal, wait for
//! every task to end and every replica to agree, then check the final
//! state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{self, AppliedIndex, SimWall, Stores};
use crate::faults::Faults;
use crate::history::Shared;
use crate::rng::SimRng;
use crate::workload;
use crate::zombie;

/// How many nodes a seed's cluster has: five for every fourth seed (two
/// node faults may then be in force at once), else three.
pub fn nodes_for(seed: u64) -> u64 {
    if seed % 4 == 0 {
        5
    } else {
        3
    }
}

/// How long each phase lasts, in simulated time.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Operations and faults.
    pub chaos: Duration,
    /// Longest wait, after the heal, for every task to end and every
    /// replica to agree (a liveness failure past it).
    pub settle: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { chaos: Duration::from_secs(20), settle: Duration::from_secs(90) }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub hash: u64,
    pub known: Vec<String>,
    pub violations: Vec<String>,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub nodes: u64,
    pub runs: usize,
    pub faults: u64,
    pub sim_ms: u64,
    /// The most any replica's time was ahead of the true time, in ms.
    pub most_ahead: i64,
}

/// Where the nodes' data dirs go: tmpfs when there is one.
fn run_dir(seed: u64) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    base.join(format!("drover-sim-{}-{seed}", std::process::id()))
}

pub fn run(seed: u64, plan: &Plan) -> Outcome {
    let dir = run_dir(seed);
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = run_in(seed, plan, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn run_in(seed: u64, plan: &Plan, dir: &std::path::Path) -> Outcome {
    let mut rng = SimRng::new(seed);
    let nodes = nodes_for(seed);
    let history = Shared::default();
    let stores = Stores::new(nodes as usize);
    let walls: Vec<SimWall> = (0..nodes).map(|_| SimWall::default()).collect();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(plan.chaos + plan.settle + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .tcp_capacity(1 << 16)
        .rng_seed(rng.next_u64())
        .build();
    for id in 1..=nodes {
        let host = cluster::node_host(id, nodes, dir.to_path_buf(), walls[id as usize - 1].clone(), stores.clone());
        sim.host(cluster::host(id), host);
    }
    let workers: Vec<String> = (1..=2).map(|w| format!("worker{w}")).collect();
    for w in &workers {
        sim.host(w.as_str(), workload::worker_host(w.clone(), nodes, history.clone(), stores.clone()));
    }
    let clients: Vec<String> = (1..=2).map(|c| format!("client{c}")).collect();
    let until = plan.chaos.as_millis() as u64;
    for c in &clients {
        let run = workload::run_client(c.clone(), nodes, rng.fork(c.len() as u64 + 7), until, history.clone());
        sim.client(c.as_str(), run);
    }
    sim.client("zombie", zombie::run(nodes, rng.fork(13), until, history.clone()));
    let mut faults = Faults::new(rng.fork(99), nodes, workers, clients, walls);
    let mut problems = Vec::new();
    let mut clock = TimeCheck::default();
    // Chaos: until the clients are done.
    let mut next_tick = 0;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                problems.push(format!("HostFailed: {e}"));
                break;
            }
        }
        let now = sim.elapsed().as_millis() as u64;
        if now < until {
            faults.crash_requested(&mut sim, now, &history);
        }
        if now >= next_tick {
            next_tick = now + 100;
            clock.check(&stores, &history, now);
            if now < until {
                faults.tick(&mut sim, now, &stores, &history);
            } else {
                // A client may still be finishing (opening its gate):
                // faults in force end when due, none start.
                faults.expire_due(&mut sim, now, &history);
            }
        }
    }
    let now = sim.elapsed().as_millis() as u64;
    faults.heal(&mut sim, now, &history);
    // Settle: every task ends, every replica agrees.
    let deadline = now + plan.settle.as_millis() as u64;
    let mut settled = None;
    if problems.is_empty() {
        loop {
            if let Err(e) = sim.step() {
                problems.push(format!("HostFailed: {e}"));
                break;
            }
            let now = sim.elapsed().as_millis() as u64;
            if now >= next_tick {
                next_tick = now + 250;
                clock.check(&stores, &history, now);
                match converged(&stores, nodes) {
                    Ok(state) => {
                        settled = Some(state);
                        break;
                    }
                    Err(why) if now >= deadline => {
                        problems.push(format!(
                            "EveryTaskEnds/ReplicasConverge: not within {:?} of the heal: {why}",
                            plan.settle
                        ));
                        break;
                    }
                    Err(_) => {}
                }
            }
        }
    }
    if let Some(state) = &settled {
        final_checks(state, &history);
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    // Stop every host before the data dirs go.
    drop(stores.0.lock().map(|mut s| s.iter_mut().for_each(|s| *s = None)));
    drop(sim);
    let h = history.lock();
    let mut violations: Vec<String> = h.violations.clone();
    violations.extend(problems);
    Outcome {
        hash: h.hash(),
        known: h.known.clone(),
        violations,
        ops_ok: h.ops_ok,
        ops_failed: h.ops_failed,
        nodes,
        runs: h.runs.values().map(Vec::len).sum(),
        faults: faults.injected,
        sim_ms,
        most_ahead: clock.most_ahead,
    }
}

/// How far replicated time may run ahead of the true time: it is steered
/// toward the median of the clocks (one bad clock in three changes
/// nothing), at most 10 ms a second, and never past the median less the
/// samples' uncertainty.
const AHEAD_SLACK_MS: u64 = 250;

/// `ReplicatedTimeMonotonic`: no replica's replicated time goes back
/// (across restarts too: it is persisted). `ReplicatedTimeNotAhead`: no
/// replica's replicated time is ahead of the true time by more than
/// [`AHEAD_SLACK_MS`] (one node's clock, the leader's say, moved it).
#[derive(Default)]
struct TimeCheck {
    last: BTreeMap<usize, u64>,
    /// The most any replica's time was ahead of the true time (reported).
    most_ahead: i64,
}

impl TimeCheck {
    fn check(&mut self, stores: &Stores, history: &Shared, now: u64) {
        let true_now = cluster::EPOCH_MS + now;
        for (i, store) in stores.running() {
            let Ok(t) = store.now_ms() else { continue };
            let ahead = t as i64 - true_now as i64;
            self.most_ahead = self.most_ahead.max(ahead);
            if ahead > AHEAD_SLACK_MS as i64 {
                history.lock().violation(
                    "ReplicatedTimeNotAhead",
                    format!("node{} replicated time {t} is {ahead} ms ahead of the true time at {now} ms", i + 1),
                );
            }
            let last = self.last.entry(i).or_insert(t);
            if t < *last {
                history.lock().violation(
                    "ReplicatedTimeMonotonic",
                    format!("node{} replicated time went from {} to {t} at {now} ms", i + 1, *last),
                );
            }
            *last = (*last).max(t);
        }
    }
}

/// The settled cluster: every replica's tasks (equal on all).
struct Settled {
    tasks: Vec<drover::domain::Task>,
    payloads: BTreeMap<u64, Vec<u8>>,
    results: BTreeMap<u64, Vec<u8>>,
}

/// Whether every node runs, every task has ended, and every replica has
/// applied the same index with the same digest.
fn converged(stores: &Stores, nodes: u64) -> Result<Settled, String> {
    let running = stores.running();
    if running.len() != nodes as usize {
        return Err(format!("{} of {nodes} nodes running", running.len()));
    }
    let mut seen = Vec::new();
    for (i, store) in &running {
        let applied = store.digest_applied().ok_or_else(|| format!("node{} has no digest", i + 1))?;
        seen.push(applied);
    }
    if seen.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("replicas differ: (applied, digest) {seen:?}{}", first_difference(&running)));
    }
    let store = &running[0].1;
    let tasks = store.scan_tasks().map_err(|e| e.to_string())?;
    if let Some(t) = tasks.iter().find(|t| !t.state.is_terminal()) {
        return Err(format!("task {} is {:?}", t.id, t.state));
    }
    let mut payloads = BTreeMap::new();
    let mut results = BTreeMap::new();
    for t in &tasks {
        if let Ok(Some(p)) = store.payload(t.id) {
            payloads.insert(t.id, p);
        }
        if let Ok(Some(r)) = store.result(t.id) {
            results.insert(t.id, r);
        }
    }
    Ok(Settled { tasks, payloads, results })
}

/// The first task row that differs between two replicas (for a failure's
/// report), if the task rows differ at all.
fn first_difference(running: &[(usize, drover::store::TaskStore)]) -> String {
    let rows: Vec<(usize, Vec<drover::domain::Task>)> =
        running.iter().filter_map(|(i, s)| s.scan_tasks().ok().map(|t| (*i, t))).collect();
    for pair in rows.windows(2) {
        let ((a, ta), (b, tb)) = (&pair[0], &pair[1]);
        if let Some((x, y)) = ta.iter().zip(tb).find(|(x, y)| format!("{x:?}") != format!("{y:?}")) {
            return format!("; first differing task row: node{} {x:?} / node{} {y:?}", a + 1, b + 1);
        }
        if ta.len() != tb.len() {
            return format!("; node{} has {} tasks, node{} {}", a + 1, ta.len(), b + 1, tb.len());
        }
    }
    for pair in running.windows(2) {
        let ((a, sa), (b, sb)) = (&pair[0], &pair[1]);
        let (ra, rb) = (state_rows(sa), state_rows(sb));
        if let Some((x, y)) = ra.iter().zip(&rb).find(|(x, y)| x != y) {
            return format!(
                "; first differing row: node{} {:?}={:?} / node{} {:?}={:?}",
                a + 1,
                String::from_utf8_lossy(&x.0),
                x.1,
                b + 1,
                String::from_utf8_lossy(&y.0),
                y.1
            );
        }
        if ra.len() != rb.len() {
            return format!("; node{} has {} rows, node{} {}", a + 1, ra.len(), b + 1, rb.len());
        }
    }
    "; every row is equal".into()
}

/// Every row of a replica's state machine.
fn state_rows(store: &drover::store::TaskStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = store.db();
    let Some(cf) = db.cf_handle(drover::store::keys::CF_SM) else { return Vec::new() };
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .filter_map(Result::ok)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// The checks of the settled state:
/// - `AckedScheduleExists`: every acknowledged schedule's task exists;
/// - `OneTaskPerIdempotencyKey`: one task per key, and every ack of a key
///   names it;
/// - `OneTaskPerRequest`: no schedule request made two tasks (payloads are
///   unique per request);
/// - `StaleCompletionChangesNothing`: a succeeded task's result is the one
///   its current fencing token's run reported, and no run started with a
///   later token.
fn final_checks(state: &Settled, history: &Shared) {
    let mut h = history.lock();
    let by_id: BTreeMap<u64, &drover::domain::Task> = state.tasks.iter().map(|t| (t.id, t)).collect();
    let mut key_ids: BTreeMap<String, u64> = BTreeMap::new();
    let acks = h.acks.clone();
    for ack in &acks {
        if !by_id.contains_key(&ack.task_id) {
            h.violation(
                "AckedScheduleExists",
                format!("{} was acknowledged as task {} which does not exist", ack.nonce, ack.task_id),
            );
        }
        if let Some(key) = &ack.key {
            let first = *key_ids.entry(key.clone()).or_insert(ack.task_id);
            if first != ack.task_id {
                h.violation(
                    "OneTaskPerIdempotencyKey",
                    format!("key {key} acknowledged as task {first} and as task {} ({})", ack.task_id, ack.client),
                );
            }
        }
    }
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut per_payload: BTreeMap<&[u8], Vec<u64>> = BTreeMap::new();
    for t in &state.tasks {
        if let Some(k) = &t.idempotency_key {
            per_key.entry(k.as_str()).or_default().push(t.id);
        }
        // A schedule's fires share its payload; each has its slot's key.
        if let Some(p) = state.payloads.get(&t.id).filter(|_| t.schedule.is_none()) {
            per_payload.entry(p.as_slice()).or_default().push(t.id);
        }
    }
    for (k, ids) in per_key.iter().filter(|(_, ids)| ids.len() > 1) {
        h.violation("OneTaskPerIdempotencyKey", format!("key {k} has tasks {ids:?}"));
    }
    for (p, ids) in per_payload.iter().filter(|(_, ids)| ids.len() > 1) {
        h.violation("OneTaskPerRequest", format!("request {} made tasks {ids:?}", String::from_utf8_lossy(p)));
    }
    for t in &state.tasks {
        if t.state != drover::domain::TaskState::Succeeded {
            continue;
        }
        let result = state.results.get(&t.id).map(|r| String::from_utf8_lossy(r).to_string()).unwrap_or_default();
        let expected = format!("token={}", t.fencing_token);
        let newest = h.runs.get(&t.id).and_then(|runs| runs.iter().map(|r| r.token).max());
        if result != expected || newest.is_some_and(|n| n > t.fencing_token) {
            h.violation(
                "StaleCompletionChangesNothing",
                format!(
                    "task {} succeeded with result {result:?}, its fencing token is {} and the newest run's {newest:?}",
                    t.id, t.fencing_token
                ),
            );
        }
    }
    ticker_checks(state, &mut h);
    let summary = format!("settled tasks={} acks={}", state.tasks.len(), acks.len());
    h.trace(&summary);
}

/// `ScheduleSlotOnce`: no slot of the ticker has two tasks (also a case of
/// `OneTaskPerIdempotencyKey`: a slot's task is keyed by it).
/// `ScheduleEverySlot`: with every missed slot caught up, each slot from
/// the first fired to the last has its task, whatever the faults did to
/// the leaders.
fn ticker_checks(state: &Settled, h: &mut crate::history::History) {
    use crate::workload::{TICKER, TICK_EVERY_MS};
    let prefix = format!("schedule:{TICKER}:");
    let mut slots: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for t in &state.tasks {
        if let Some(slot) = t.idempotency_key.as_deref().and_then(|k| k.strip_prefix(&prefix)) {
            match slot.parse::<u64>() {
                Ok(at) => slots.entry(at).or_default().push(t.id),
                Err(_) => h.violation("ScheduleSlotOnce", format!("task {} has a slot key {slot:?}", t.id)),
            }
        }
    }
    for (at, ids) in slots.iter().filter(|(_, ids)| ids.len() > 1) {
        h.violation("ScheduleSlotOnce", format!("slot {at} of {TICKER} has tasks {ids:?}"));
    }
    let (Some(first), Some(last)) = (slots.keys().next().copied(), slots.keys().last().copied()) else {
        h.violation("ScheduleEverySlot", format!("{TICKER} fired no slot"));
        return;
    };
    let missing: Vec<u64> = (0..=(last - first) / TICK_EVERY_MS)
        .map(|k| first + k * TICK_EVERY_MS)
        .filter(|at| !slots.contains_key(at))
        .collect();
    if !missing.is_empty() {
        h.violation(
            "ScheduleEverySlot",
            format!("{} of the slots of {TICKER} from {first} to {last} have no task: {missing:?}", missing.len()),
        );
    }
    h.trace(&format!("ticker slots={}", slots.len()));
}
