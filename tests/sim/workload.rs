//! What users do meanwhile: clients schedule (with and without
//! idempotency keys, some after other tasks), read, cancel, and gate a
//! callback (pause or drop it, then open it) through the
//! real [`drover::client::Client`] (which retries an unknown outcome under
//! the same request id); workers run tasks through the real worker SDK
//! (leases, heartbeats, self-fencing, completions retried across
//! reconnects), checking the execution invariants as each run starts.

use std::time::Duration;

use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Stores};
use crate::history::{sim_ms, Ack, Shared};
use crate::rng::{mix, SimRng};

/// The callbacks of the run and their settings: most tasks may run six
/// times; the tasks of [`ONCE`] only once (so an attempt counted for an
/// assignment that never reached its worker shows as a second run).
pub const CALLBACK: &str = "sim";
pub const ONCE: &str = "sim-once";
/// The callback of the periodic schedule [`TICKER`], which the second
/// client creates (every [`TICK_EVERY_MS`], every missed slot caught up,
/// runs may overlap) and pauses before it stops.
pub const TICK: &str = "sim-tick";
pub const TICKER: &str = "ticker";
pub const TICK_EVERY_MS: u64 = 1_000;
/// Every callback the workers serve.
pub const CALLBACKS: [&str; 3] = [CALLBACK, ONCE, TICK];
pub const CONCURRENCY: u32 = 4;
pub const LEASE_MS: u64 = 2_000;

pub fn max_attempts(callback: &str) -> u32 {
    if callback == ONCE {
        1
    } else {
        6
    }
}

pub fn settings(callback: &str) -> pb::CallbackSettings {
    pb::CallbackSettings {
        name: callback.into(),
        max_attempts: max_attempts(callback),
        lease_ms: LEASE_MS,
        timeout_ms: 10_000,
        concurrency: CONCURRENCY,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        ..Default::default()
    }
}

pub fn client(nodes: u64) -> Client {
    let mut c = Client::new((1..=nodes).map(cluster::endpoint).collect()).with_dialer(cluster::dialer());
    c.deadline = Duration::from_secs(8);
    c.attempt_timeout = Duration::from_secs(2);
    c
}

fn ended(state: i32) -> bool {
    matches!(
        pb::TaskState::try_from(state),
        Ok(pb::TaskState::Succeeded | pb::TaskState::Failed | pb::TaskState::Dead | pb::TaskState::Cancelled)
    )
}

/// One client: operations until `until_ms` of simulated time.
pub async fn run_client(name: String, nodes: u64, mut rng: SimRng, until_ms: u64, history: Shared) -> turmoil::Result {
    let c = client(nodes);
    // Both clients register the callbacks (idempotent).
    for callback in CALLBACKS {
        while c.register_callback(settings(callback)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut n = 0u64;
    // Only the first client gates, so the gates' history is one sequence.
    let gating = name == "client1";
    let mut gate_maybe_set = false;
    let ticking = name == "client2";
    if ticking {
        while !create_ticker(&c, &name, &history).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    while sim_ms() < until_ms {
        tokio::time::sleep(Duration::from_millis(rng.range(20, 250))).await;
        n += 1;
        let acked: Vec<u64> = {
            let h = history.lock();
            h.acks.iter().map(|a| a.task_id).collect()
        };
        let pick = |rng: &mut SimRng| acked.get(rng.range(0, acked.len() as u64) as usize).copied();
        let roll = rng.range(0, 100);
        if roll < 60 || acked.is_empty() {
            let nonce = format!("{name}-{n}");
            let once = rng.chance(0.3);
            let key = match rng.range(0, 10) {
                0..=3 => Some(format!("key-{nonce}")),
                // A key is per callback: each shared key has one.
                4..=5 => Some(format!("shared-{}-{}", rng.range(0, 8), u8::from(once))),
                _ => None,
            };
            let after: Vec<u64> = if rng.chance(0.15) { pick(&mut rng).into_iter().collect() } else { Vec::new() };
            let callback = if once { ONCE } else { CALLBACK };
            let spec = pb::TaskSpec {
                callback: callback.into(),
                payload: nonce.clone().into_bytes(),
                priority: rng.range(0, 3) as u32,
                when: Some(pb::task_spec::When::DelayMs(rng.range(0, 2_000))),
                idempotency_key: key.clone().unwrap_or_default(),
                after: after.clone(),
                ..Default::default()
            };
            let started = sim_ms();
            let result = c.schedule(rng.range(0, nodes) as usize, spec).await;
            let mut h = history.lock();
            match result {
                Ok(r) => {
                    h.ops_ok += 1;
                    h.trace(&format!(
                        "{} ack {name} {nonce} key={key:?} task={} created={}",
                        sim_ms(),
                        r.task_id,
                        r.created
                    ));
                    if !after.is_empty() && r.created {
                        h.parents.insert(r.task_id, after.clone());
                    }
                    h.acks.push(Ack { client: name.clone(), nonce, key, task_id: r.task_id });
                }
                Err(s) => {
                    h.ops_failed += 1;
                    h.trace(&format!("{} schedule-failed {name} {nonce} since {started} {:?}", sim_ms(), s.code()));
                }
            }
        } else if gating && roll < 70 {
            // In turn: set a gate, then open it.
            if gate_maybe_set {
                gate_maybe_set = !open_gate(&c, &name, &history).await;
            } else {
                set_gate(&c, &name, &mut rng, &history).await;
                gate_maybe_set = true;
            }
        } else if roll < 85 {
            let Some(id) = pick(&mut rng) else { continue };
            let started = sim_ms();
            let result = c.get_task(id, false, false).await;
            let mut h = history.lock();
            match result {
                Ok(t) => {
                    h.ops_ok += 1;
                    let state = format!("{:?}", pb::TaskState::try_from(t.state).unwrap_or(pb::TaskState::Unspecified));
                    h.read(&name, id, &state, ended(t.state), started, sim_ms());
                }
                Err(s) => {
                    h.ops_failed += 1;
                    h.trace(&format!("{} get-failed {name} task={id} {:?}", sim_ms(), s.code()));
                }
            }
        } else {
            let Some(id) = pick(&mut rng) else { continue };
            let result = c.cancel_task(id).await;
            let mut h = history.lock();
            match result {
                Ok(_) => {
                    h.ops_ok += 1;
                    h.trace(&format!("{} cancelled {name} task={id}", sim_ms()));
                }
                Err(s) => {
                    h.ops_failed += 1;
                    h.trace(&format!("{} cancel-failed {name} task={id} {:?}", sim_ms(), s.code()));
                }
            }
        }
    }
    // A schedule still firing would never let the cluster settle.
    if ticking {
        while !pause_ticker(&c, &name, &history).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A gate left in force would hold its tasks past the run: open it
    // (faults end on their own, so this succeeds in the end).
    if gate_maybe_set {
        while !open_gate(&c, &name, &history).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Create [`TICKER`]; whether it exists now (a retry after an unknown
/// outcome may find it made: `ALREADY_EXISTS`; a refusal is a violation,
/// and retrying it would not help).
async fn create_ticker(c: &Client, name: &str, history: &Shared) -> bool {
    let def = pb::ScheduleDefinition {
        name: TICKER.into(),
        callback: TICK.into(),
        every_ms: TICK_EVERY_MS,
        overlap: "allow".into(),
        catchup: "all".into(),
        ..Default::default()
    };
    let result = c.create_schedule(def).await;
    let mut h = history.lock();
    match result {
        Ok(_) => {
            h.ops_ok += 1;
            h.trace(&format!("{} ticker-created {name}", sim_ms()));
            true
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            h.ops_ok += 1;
            h.trace(&format!("{} ticker-exists {name}", sim_ms()));
            true
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            h.violation("ScheduleEverySlot", format!("the ticker was refused: {}", s.message()));
            true
        }
        Err(s) => {
            h.ops_failed += 1;
            h.trace(&format!("{} create-ticker-failed {name} {:?}", sim_ms(), s.code()));
            false
        }
    }
}

/// Pause [`TICKER`]; whether it is paused (or was never made: its
/// creation was refused, a violation already).
async fn pause_ticker(c: &Client, name: &str, history: &Shared) -> bool {
    let result = c.pause_schedule(TICKER, "the run ends").await;
    let mut h = history.lock();
    match result {
        Ok(_) => {
            h.ops_ok += 1;
            h.trace(&format!("{} ticker-paused {name}", sim_ms()));
            true
        }
        Err(s) if s.code() == tonic::Code::NotFound => true,
        Err(s) => {
            h.ops_failed += 1;
            h.trace(&format!("{} pause-ticker-failed {name} {:?}", sim_ms(), s.code()));
            false
        }
    }
}

/// Open the gate on [`CALLBACK`]; whether it is open (a failed open
/// leaves it possibly set).
async fn open_gate(c: &Client, name: &str, history: &Shared) -> bool {
    let issued = sim_ms();
    if let Some(g) = history.lock().gates.iter_mut().rev().find(|g| g.open_issued_ms.is_none()) {
        g.open_issued_ms = Some(issued);
    }
    let result = c.open_gate(CALLBACK, "").await;
    let mut h = history.lock();
    match result {
        Ok(_) => {
            h.ops_ok += 1;
            h.trace(&format!("{} gate-opened {name} (issued at {issued})", sim_ms()));
            true
        }
        Err(s) => {
            h.ops_failed += 1;
            h.trace(&format!("{} open-gate-failed {name} {:?}", sim_ms(), s.code()));
            false
        }
    }
}

/// Set a gate on [`CALLBACK`]: a pause, or now and then a drop. Whatever
/// the outcome, the gate may be set afterwards (an unknown outcome may
/// have applied).
async fn set_gate(c: &Client, name: &str, rng: &mut SimRng, history: &Shared) {
    let (mode, mode_name) = if rng.chance(0.2) { (pb::GateMode::Drop, "drop") } else { (pb::GateMode::Pause, "pause") };
    let req = pb::SetGateRequest { callback: CALLBACK.into(), mode: mode as i32, ..Default::default() };
    let result = c.set_gate(req).await;
    let mut h = history.lock();
    match result {
        Ok(r) => {
            h.ops_ok += 1;
            let Some(since_index) = r.gate.map(|g| g.since_index) else {
                h.violation("GateReplyNamesItsGate", "a SetGate reply without its gate".into());
                return;
            };
            h.trace(&format!("{} gate-set {name} {mode_name} since={since_index}", sim_ms()));
            h.gates.push(crate::history::GateEpisode { mode: mode_name, since_index, open_issued_ms: None });
        }
        Err(s) => {
            h.ops_failed += 1;
            h.trace(&format!("{} set-gate-failed {name} {:?}", sim_ms(), s.code()));
        }
    }
}

/// Records the end of a run when its handler returns or is dropped (the
/// SDK drops a handler whose lease lapsed; a crash drops the worker).
struct RunGuard {
    history: Shared,
    worker: String,
    task: u64,
    token: u64,
    how: &'static str,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let now = sim_ms();
        let mut h = self.history.lock();
        h.ended(&self.worker, self.task, self.token, now, self.how);
        // Now and then the worker dies just after a success: by then its
        // completion has likely committed and the leader is assigning it
        // the next task, which then never reaches it (released, not
        // counted as an attempt).
        let roll = mix(self.task ^ self.token.rotate_left(17));
        if self.how == "success" && roll % 6 == 0 {
            h.crash_requests.push((self.worker.clone(), now + 4 + (roll >> 8) % 30));
        }
    }
}

/// The handler: checks the run may start, works for a while (derived from
/// the task and attempt), and mostly succeeds with its fencing token as
/// the result (so the final check can tell which run's completion won).
async fn handle(ctx: TaskContext, worker: String, history: Shared, stores: Stores) -> TaskResult {
    let now = sim_ms();
    {
        let mut h = history.lock();
        h.started(&worker, &ctx.callback, ctx.task_id, ctx.fencing_token, ctx.attempt, now);
        h.check_gates(&ctx.callback, ctx.task_id, ctx.fencing_token, now);
    }
    check_may_start(&ctx, &history, &stores);
    let mut guard =
        RunGuard { history: history.clone(), worker, task: ctx.task_id, token: ctx.fencing_token, how: "dropped" };
    let roll = mix(ctx.task_id.wrapping_mul(31) ^ u64::from(ctx.attempt));
    let work = Duration::from_millis(30 + roll % 900);
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            guard.how = "cancelled";
            TaskResult::retry("cancelled")
        }
        _ = tokio::time::sleep(work) => {
            if roll % 10 == 0 {
                guard.how = "retry";
                TaskResult::Retry { error: "simulated failure".into(), retry_after: None }
            } else {
                guard.how = "success";
                TaskResult::Success(format!("token={}", ctx.fencing_token).into_bytes())
            }
        }
    }
}

/// Slack of `RunAtInTrueTime`: replicated time may run ahead of the true
/// time by the clocks' bound (500 ms), plus the samples' round trips.
const TRUE_TIME_SLACK_MS: u64 = 1_000;

/// `NotBeforeRunAt`: no replica's replicated time has reached the task's
/// run-at yet. `RunAtInTrueTime`: replicated time (and so a run-at) is far
/// ahead of the true time: one node's clock moved it. `ChildAfterParents`:
/// a parent has not ended on the replica that applied the most.
fn check_may_start(ctx: &TaskContext, history: &Shared, stores: &Stores) {
    let running = stores.running();
    let newest = running.iter().filter_map(|(_, s)| s.now_ms().ok()).max().unwrap_or(0);
    let Some((store, _)) = stores.most_applied() else { return };
    let Ok(Some(task)) = store.get(ctx.task_id) else { return };
    // Only with every replica readable: a crashed one may hold the newest
    // replicated time (the leader that assigned the task, say).
    if task.run_at_ms > newest && running.len() == stores.nodes() {
        history.lock().violation(
            "NotBeforeRunAt",
            format!(
                "task {} started with run-at {} before any replica's time reached it ({newest})",
                ctx.task_id, task.run_at_ms
            ),
        );
    }
    let true_now = cluster::EPOCH_MS + sim_ms();
    if task.run_at_ms > true_now + TRUE_TIME_SLACK_MS {
        history.lock().violation(
            "RunAtInTrueTime",
            format!("task {} started {} ms before its run-at in true time", ctx.task_id, task.run_at_ms - true_now),
        );
    }
    let parents = history.lock().parents.get(&ctx.task_id).cloned().unwrap_or_default();
    {
        for parent in parents {
            let parent_ended = store.get(parent).ok().flatten().is_none_or(|p| p.state.is_terminal());
            if !parent_ended {
                history.lock().violation(
                    "ChildAfterParents",
                    format!("task {} started before its parent {parent} ended", ctx.task_id),
                );
            }
        }
    }
}

/// The software of a worker host: the real SDK until the host is crashed.
pub fn worker_host(
    name: String,
    nodes: u64,
    history: Shared,
    stores: Stores,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>> {
    move || {
        let (name, history, stores) = (name.clone(), history.clone(), stores.clone());
        Box::pin(async move {
            let mut worker = Worker::builder((1..=nodes).map(cluster::endpoint))
                .id(name.clone())
                .dialer(cluster::dialer())
                .shutdown_grace(Duration::from_secs(1));
            for callback in CALLBACKS {
                let (name, history, stores) = (name.clone(), history.clone(), stores.clone());
                worker = worker.handle(callback, CONCURRENCY, move |ctx: TaskContext| {
                    handle(ctx, name.clone(), history.clone(), stores.clone())
                });
            }
            worker.run(CancellationToken::new()).await.map_err(|e| format!("worker {name}: {e}"))?;
            Ok(())
        })
    }
}
