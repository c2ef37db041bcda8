//! Property test: apply does not depend on how entries are batched.
//!
//! Every node cuts the committed log into apply batches differently (the
//! leader as entries commit, followers as they learn the commit index, a
//! restarted node from its last-applied). The state after a sequence of
//! entries must be the same whatever the cuts, or replicas diverge.
//!
//! The test generates random command sequences over a small universe of
//! callbacks, task ids and idempotency keys, so that commands collide:
//! tasks fail into the dead-letter queue and are redriven or purged by
//! callback in the same batch, purged keys are scheduled again, imports are
//! read back. It first *concretises* each sequence by applying it one entry
//! per batch and reading the store before each entry (to fill in fencing
//! tokens and attempt counts, sometimes deliberately stale), then applies
//! the concrete sequence to fresh stores cut three ways: one entry per
//! batch, all in one batch, and at random cuts. Replies, state digests and
//! the live index must be equal, and the live index kept by apply must equal
//! one rebuilt from disk.
//!
//! `DROVER_PROPTEST_SEED=N` replays a run; `DROVER_PROPTEST_CASES=N` runs
//! more cases. The seed is printed on failure.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use rocksdb::DB;

use super::index::LiveIndex;
use super::*;
use crate::domain::*;

const CALLBACKS: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const COLLECTIONS: [&str; 2] = ["x", "y"];
/// Task ids the generator refers to (ids are handed out from 1).
const MAX_ID: u64 = 12;

/// A command whose fencing token or attempt count is resolved against the
/// store when the sequence is concretised.
#[derive(Debug, Clone)]
enum Abstract {
    Register {
        callback: usize,
        max_attempts: u32,
    },
    Schedule {
        tasks: Vec<(usize, Option<usize>, u64, Option<usize>)>,
        auto_register: bool,
        request: Option<u8>,
    },
    Assign {
        ids: Vec<u64>,
        stale_attempts: bool,
    },
    Complete {
        id: u64,
        stale: bool,
        outcome: u8,
    },
    Expire {
        id: u64,
        stale: bool,
    },
    Release {
        id: u64,
        stale: bool,
    },
    Cancel {
        id: u64,
    },
    Redrive {
        target: AbstractTarget,
    },
    Purge {
        target: AbstractTarget,
    },
    Retire {
        node: u64,
    },
    Import {
        first_id: u64,
        dead: bool,
        key: usize,
        callback: usize,
    },
    /// A gate on a callback or one of its collections; `until` is relative
    /// to the entry's stamp (some end within the sequence).
    SetGate {
        callback: usize,
        collection: Option<usize>,
        drop: bool,
        until: Option<u64>,
        cancel_running: bool,
    },
    OpenGate {
        callback: usize,
        collection: Option<usize>,
        if_expired: bool,
    },
    /// Retention: delete these ids (finished or not) and some request ids.
    Collect {
        ids: Vec<u64>,
        request: Option<u8>,
    },
    /// A periodic schedule on a callback, with an overlap policy.
    PutSchedule {
        schedule: usize,
        callback: usize,
        overlap: u8,
        create: bool,
    },
    /// Fire slots (relative to the entry's stamp, some stale).
    Fire {
        schedule: usize,
        slots: Vec<i64>,
        skip: bool,
    },
    PauseSchedule {
        schedule: usize,
        paused: bool,
        catch_up: bool,
    },
    /// Skip due slots up to one (relative to the entry's stamp, maybe stale).
    SkipSlots {
        schedule: usize,
        to: i64,
        skipped: u64,
    },
    Trigger {
        schedule: usize,
    },
    /// Tasks after existing ids (`Ok`) or earlier items (`Err`).
    Graph {
        tasks: Vec<GraphItem>,
        request: Option<u8>,
    },
    RedriveWithDependents {
        target: AbstractTarget,
    },
    /// A grant to one of three subjects (some expiring soon, some scoped).
    Grant {
        subject: u8,
        role: u8,
        expires: Option<u64>,
        scoped: bool,
    },
    Revoke {
        subject: u8,
    },
    Auth {
        enabled: bool,
    },
    /// Name the cluster (the first one applied wins).
    Name {
        id: u8,
    },
}

/// A graph item: callback, parents (existing ids `Ok`, earlier items
/// `Err`), all-finished.
type GraphItem = (usize, Vec<Result<u64, u32>>, bool);

#[derive(Debug, Clone)]
enum AbstractTarget {
    Task(u64),
    Callback(usize),
}

fn target() -> impl Strategy<Value = AbstractTarget> {
    prop_oneof![(1..=MAX_ID).prop_map(AbstractTarget::Task), (0..CALLBACKS.len()).prop_map(AbstractTarget::Callback),]
}

fn abstract_command() -> impl Strategy<Value = Abstract> {
    let id = 1..=MAX_ID;
    prop_oneof![
        1 => (0..CALLBACKS.len(), 1u32..=3).prop_map(|(callback, max_attempts)| Abstract::Register { callback, max_attempts }),
        5 => (
            prop::collection::vec((0..CALLBACKS.len(), prop::option::of(0..KEYS.len()), prop_oneof![Just(0u64), 1u64..3000], prop::option::of(0..COLLECTIONS.len())), 1..4),
            any::<bool>(),
            prop::option::of(0u8..3),
        )
            .prop_map(|(tasks, auto_register, request)| Abstract::Schedule { tasks, auto_register, request }),
        5 => (prop::collection::vec(id.clone(), 1..4), prop::bool::weighted(0.1))
            .prop_map(|(ids, stale_attempts)| Abstract::Assign { ids, stale_attempts }),
        5 => (id.clone(), prop::bool::weighted(0.1), 0u8..5).prop_map(|(id, stale, outcome)| Abstract::Complete { id, stale, outcome }),
        1 => (id.clone(), prop::bool::weighted(0.2)).prop_map(|(id, stale)| Abstract::Expire { id, stale }),
        1 => (id.clone(), prop::bool::weighted(0.2)).prop_map(|(id, stale)| Abstract::Release { id, stale }),
        1 => id.clone().prop_map(|id| Abstract::Cancel { id }),
        2 => target().prop_map(|target| Abstract::Redrive { target }),
        2 => target().prop_map(|target| Abstract::Purge { target }),
        1 => (1u64..4).prop_map(|node| Abstract::Retire { node }),
        1 => (100u64..103, any::<bool>(), 0..KEYS.len(), 0..CALLBACKS.len())
            .prop_map(|(first_id, dead, key, callback)| Abstract::Import { first_id, dead, key, callback }),
        2 => (0..CALLBACKS.len(), prop::option::of(0..COLLECTIONS.len()), any::<bool>(), prop::option::of(1u64..5000), prop::bool::weighted(0.3))
            .prop_map(|(callback, collection, drop, until, cancel_running)| Abstract::SetGate { callback, collection, drop, until, cancel_running }),
        1 => (0..CALLBACKS.len(), prop::option::of(0..COLLECTIONS.len()), any::<bool>())
            .prop_map(|(callback, collection, if_expired)| Abstract::OpenGate { callback, collection, if_expired }),
        2 => (prop::collection::vec(1..=MAX_ID, 1..5), prop::option::of(0u8..3))
            .prop_map(|(ids, request)| Abstract::Collect { ids, request }),
        1 => (0..2usize, 0..CALLBACKS.len(), 0u8..5, any::<bool>())
            .prop_map(|(schedule, callback, overlap, create)| Abstract::PutSchedule { schedule, callback, overlap, create }),
        3 => (0..2usize, prop::collection::vec(-3000i64..3000, 1..4), any::<bool>())
            .prop_map(|(schedule, slots, skip)| Abstract::Fire { schedule, slots, skip }),
        1 => (0..2usize, any::<bool>(), any::<bool>())
            .prop_map(|(schedule, paused, catch_up)| Abstract::PauseSchedule { schedule, paused, catch_up }),
        1 => (0..2usize, -3000i64..3000, 1u64..4)
            .prop_map(|(schedule, to, skipped)| Abstract::SkipSlots { schedule, to, skipped }),
        1 => (0..2usize).prop_map(|schedule| Abstract::Trigger { schedule }),
        4 => (
            prop::collection::vec(
                (0..CALLBACKS.len(), prop::collection::vec(prop_oneof![(1..=MAX_ID).prop_map(Ok), (0u32..3).prop_map(Err)], 0..4), any::<bool>()),
                1..4,
            ),
            prop::option::of(0u8..3),
        )
            .prop_map(|(tasks, request)| Abstract::Graph { tasks, request }),
        2 => target().prop_map(|target| Abstract::RedriveWithDependents { target }),
        1 => (0u8..3, 0u8..5, prop::option::of(1u64..3000), any::<bool>())
            .prop_map(|(subject, role, expires, scoped)| Abstract::Grant { subject, role, expires, scoped }),
        1 => (0u8..3).prop_map(|subject| Abstract::Revoke { subject }),
        1 => any::<bool>().prop_map(|enabled| Abstract::Auth { enabled }),
        1 => (1u8..4).prop_map(|id| Abstract::Name { id }),
    ]
}

/// A fresh store: RocksDB in a temp dir, the applier and the live index.
struct Replica {
    _dir: tempfile::TempDir,
    db: Arc<DB>,
    applier: Applier,
    index: LiveIndex,
}

impl Replica {
    fn new() -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path()).expect("open db");
        let applier = Applier::load(&db).expect("load applier");
        let index = LiveIndex::load(&db).expect("load index");
        Replica { _dir: dir, db, applier, index }
    }

    /// Apply `entries` (log index, command) as one batch, as the state
    /// machine does: one write, then the index changes.
    fn apply(&mut self, entries: &[(u64, Command)]) -> Vec<CommandResponse> {
        let mut batch = ApplyBatch::new(&self.db);
        let replies =
            entries.iter().map(|(index, cmd)| self.applier.apply(&mut batch, *index, cmd).expect("apply")).collect();
        self.applier.write_counters(&mut batch).expect("counters");
        let (write, ops, reload) = batch.finish().expect("finish");
        self.db.write(write).expect("write");
        if reload {
            self.index = LiveIndex::load(&self.db).expect("reload index");
        } else {
            for op in ops {
                self.index.apply(op);
            }
        }
        replies
    }

    fn digest(&self) -> u64 {
        TaskStore::new(self.db.clone()).digest().expect("digest").1
    }

    fn task(&self, id: u64) -> Option<Task> {
        TaskStore::new(self.db.clone()).get(id).expect("read task")
    }
}

fn callback_config(callback: usize, max_attempts: u32) -> CallbackConfig {
    CallbackConfig {
        max_attempts,
        lease_ms: 1_000,
        backoff_initial_ms: 1,
        backoff_max_ms: 5,
        ..CallbackConfig::with_defaults(CALLBACKS[callback])
    }
}

/// Records of a small backup: one task (dead or scheduled, with a key) and
/// its callback.
fn import_records(first_id: u64, dead: bool, key: usize, callback: usize) -> Operation {
    let name = CALLBACKS[callback];
    let state = if dead { TaskState::Dead } else { TaskState::Scheduled };
    let task = Task {
        id: first_id,
        callback: name.into(),
        priority: 0,
        state,
        run_at_ms: 0,
        created_at_ms: 0,
        attempts: u32::from(dead),
        payload_size: 1,
        idempotency_key: Some(KEYS[key].into()),
        created_index: 1,
        fencing_token: 0,
        worker: None,
        last_error: None,
        result_size: None,
        cancel_requested: false,
        history: vec![Transition { state, at_ms: 0, attempt: u32::from(dead) }],
        collection: None,
        schedule: None,
    };
    let mut records = vec![
        (keys::callback(name), encoding::encode(&callback_config(callback, 2))),
        (keys::task(first_id).to_vec(), encoding::encode(&task)),
        (keys::payload(first_id).to_vec(), b"x".to_vec()),
        (keys::idempotency(name, KEYS[key]), encoding::encode(&first_id)),
        (keys::SM_NEXT_TASK_ID.to_vec(), encoding::encode(&(first_id + 1))),
    ];
    if dead {
        records.push((keys::by_state(TaskState::Dead.code(), first_id).to_vec(), Vec::new()));
    } else {
        records.push((keys::pending(name, None, 0, 0, first_id), Vec::new()));
    }
    Operation::Import {
        records: records
            .into_iter()
            .map(|(k, v)| (serde_bytes::ByteBuf::from(k), serde_bytes::ByteBuf::from(v)))
            .collect(),
    }
}

fn outcome(code: u8) -> Outcome {
    match code {
        0 | 1 => Outcome::Success { result: b"ok".to_vec() },
        2 => Outcome::Retry { error: "again".into(), retry_after_ms: None },
        3 => Outcome::Fatal { error: "bad".into() },
        _ => Outcome::Cancelled,
    }
}

/// Resolve one abstract command against the current state of `r`, for an
/// entry stamped `stamp`.
fn concretise(r: &Replica, a: &Abstract, stamp: u64) -> Operation {
    let token = |id: u64, stale: bool| {
        let t = r.task(id).map_or(0, |t| t.fencing_token);
        if stale {
            t.saturating_sub(1)
        } else {
            t
        }
    };
    match a {
        Abstract::Register { callback, max_attempts } => {
            Operation::RegisterCallback(callback_config(*callback, *max_attempts))
        }
        Abstract::Schedule { tasks, auto_register, request } => {
            let tasks = tasks
                .iter()
                .map(|(callback, key, run_at_ms, collection)| NewTask {
                    callback: CALLBACKS[*callback].into(),
                    payload: vec![*callback as u8],
                    priority: (*run_at_ms % 3) as u8,
                    run_at_ms: *run_at_ms,
                    idempotency_key: key.map(|k| KEYS[k].to_string()),
                    collection: collection.map(|c| COLLECTIONS[c].to_string()),
                })
                .collect();
            match request {
                Some(r) => {
                    Operation::ScheduleRequest { request_id: RequestId([*r; 16]), tasks, auto_register: *auto_register }
                }
                None => Operation::Schedule { tasks, auto_register: *auto_register },
            }
        }
        Abstract::Assign { ids, stale_attempts } => Operation::Assign {
            assignments: ids
                .iter()
                .map(|id| Assignment {
                    task_id: *id,
                    worker: format!("w{}", id % 2),
                    attempts_seen: r.task(*id).map_or(0, |t| t.attempts) + u32::from(*stale_attempts),
                })
                .collect(),
        },
        Abstract::Complete { id, stale, outcome: code } => Operation::Complete {
            completions: vec![Completion { task_id: *id, fencing_token: token(*id, *stale), outcome: outcome(*code) }],
        },
        Abstract::Expire { id, stale } => Operation::Expire {
            leases: vec![Expiry { task_id: *id, fencing_token: token(*id, *stale), reason: "lapsed".into() }],
        },
        Abstract::Release { id, stale } => Operation::Release {
            leases: vec![Expiry { task_id: *id, fencing_token: token(*id, *stale), reason: "undelivered".into() }],
        },
        Abstract::Cancel { id } => Operation::Cancel { task_id: *id },
        Abstract::Redrive { target } => Operation::Redrive { target: concrete_target(target) },
        Abstract::Purge { target } => Operation::Purge { target: concrete_target(target) },
        Abstract::Retire { node } => Operation::RetireNode { node_id: *node },
        Abstract::Import { first_id, dead, key, callback } => import_records(*first_id, *dead, *key, *callback),
        Abstract::SetGate { callback, collection, drop, until, cancel_running } => Operation::SetGate {
            gate: Gate {
                target: gate_target(*callback, *collection),
                mode: if *drop { GateMode::Drop } else { GateMode::Pause },
                since_ms: 0,
                since_index: 0,
                until_ms: until.map(|u| stamp + u),
                note: "n".into(),
            },
            cancel_running: *cancel_running,
        },
        Abstract::OpenGate { callback, collection, if_expired } => {
            Operation::OpenGate { target: gate_target(*callback, *collection), if_expired: *if_expired }
        }
        Abstract::PutSchedule { schedule, callback, overlap, create } => {
            Operation::PutSchedule { schedule: Box::new(periodic(*schedule, *callback, *overlap)), create: *create }
        }
        Abstract::Fire { schedule, slots, skip } => Operation::FireSchedule {
            name: SCHEDULES[*schedule].into(),
            slots: slots.iter().map(|o| slot_at(stamp, *o)).collect(),
            skip_to: skip.then(|| slot_at(stamp, -3_500)),
            skipped: u64::from(*skip),
        },
        Abstract::PauseSchedule { schedule, paused, catch_up } => Operation::PauseSchedule {
            name: SCHEDULES[*schedule].into(),
            paused: *paused,
            note: String::new(),
            catch_up: *catch_up,
        },
        Abstract::Trigger { schedule } => Operation::TriggerSchedule { name: SCHEDULES[*schedule].into() },
        Abstract::Grant { subject, role, expires, scoped } => {
            use crate::domain::auth::{Grant, PrincipalKey, Role};
            let name = format!("s{subject}");
            Operation::PutGrant {
                grant: Grant {
                    id: Grant::subject_id(&name),
                    principal: PrincipalKey::Subject(name),
                    role: Role::ALL[usize::from(*role)],
                    callbacks: if *scoped { vec![format!("{}*", &CALLBACKS[0][..1])] } else { vec![] },
                    created_ms: 0,
                    expires_ms: expires.map(|e| stamp + e),
                    note: String::new(),
                },
            }
        }
        Abstract::Revoke { subject } => Operation::RevokeGrant { id: format!("c-s{subject}") },
        Abstract::Auth { enabled } => Operation::SetAuth { enabled: *enabled },
        Abstract::SkipSlots { schedule, to, skipped } => Operation::SkipSchedule {
            name: SCHEDULES[*schedule].into(),
            skip_to: slot_at(stamp, *to),
            skipped: *skipped,
            note: "out of disk".into(),
        },
        Abstract::Name { id } => Operation::SetClusterId { cluster_id: crate::domain::ClusterId(u128::from(*id)) },
        Abstract::Graph { tasks, request } => {
            use crate::domain::dependency::{After, AfterPolicy, Parent};
            let (tasks, after) = tasks
                .iter()
                .enumerate()
                .map(|(i, (callback, parents, all_finished))| {
                    let new = NewTask {
                        callback: CALLBACKS[*callback].into(),
                        payload: vec![*callback as u8],
                        priority: 0,
                        run_at_ms: stamp,
                        idempotency_key: None,
                        collection: None,
                    };
                    // Items name earlier items only (as the API checks),
                    // except for an occasional forward one, which apply
                    // must refuse.
                    let parents = parents
                        .iter()
                        .map(|p| match *p {
                            Ok(id) => Parent::Task(id),
                            Err(j) => Parent::Item(if i == 0 { j } else { j % i as u32 }),
                        })
                        .collect();
                    let policy = if *all_finished { AfterPolicy::AllFinished } else { AfterPolicy::AllSucceeded };
                    (new, After { parents, policy })
                })
                .unzip();
            Operation::ScheduleGraph {
                request_id: request.map(|r| RequestId([r; 16])),
                tasks,
                after,
                auto_register: true,
            }
        }
        Abstract::RedriveWithDependents { target } => {
            Operation::RedriveWithDependents { target: concrete_target(target) }
        }
        Abstract::Collect { ids, request } => Operation::Collect {
            task_ids: ids.clone(),
            request_ids: request.map(|r| RequestId([r; 16])).into_iter().collect(),
        },
    }
}

const SCHEDULES: [&str; 2] = ["s0", "s1"];

fn periodic(name: usize, callback: usize, overlap: u8) -> schedule::Schedule {
    use schedule::*;
    let overlap = [Overlap::Skip, Overlap::BufferOne, Overlap::BufferAll, Overlap::Allow, Overlap::CancelOther]
        [overlap as usize % 5];
    Schedule::new(
        SCHEDULES[name].into(),
        ScheduleSpec {
            cadence: Cadence::Every { period_ms: 1_000 },
            start_ms: None,
            end_ms: None,
            jitter_ms: 0,
            dst_repeat: DstRepeat::Once,
            dst_gap: DstGap::Shift,
        },
        TaskTemplate { callback: CALLBACKS[callback].into(), payload: vec![], priority: 0, collection: None },
        SchedulePolicy { overlap, catchup: Catchup::All, catchup_window_ms: 1_000, pause_on_failure: callback == 1 },
    )
}

fn slot_at(stamp: u64, offset: i64) -> schedule::Slot {
    let at = stamp.saturating_add_signed(offset);
    schedule::Slot { at_ms: at, id: at.to_string() }
}

fn gate_target(callback: usize, collection: Option<usize>) -> GateTarget {
    GateTarget::new(CALLBACKS[callback], collection.map(|c| COLLECTIONS[c].to_string()))
}

fn concrete_target(t: &AbstractTarget) -> Target {
    match t {
        AbstractTarget::Task(id) => Target::Task(*id),
        AbstractTarget::Callback(c) => Target::Callback(CALLBACKS[*c].into()),
    }
}

/// One generated case: the abstract commands, the stamp increments and the
/// random cut points.
#[derive(Debug, Clone)]
struct Case {
    commands: Vec<Abstract>,
    /// Milliseconds between consecutive stamps (0 = same stamp).
    steps: Vec<u64>,
    /// Where the random cut run starts a new batch.
    cuts: Vec<bool>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..60).prop_flat_map(|n| {
        (
            prop::collection::vec(abstract_command(), n),
            prop::collection::vec(prop_oneof![Just(0u64), 1u64..50, 500u64..3000], n),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(commands, steps, cuts)| Case { commands, steps, cuts })
    })
}

/// Run one case; Err describes the first difference found.
fn check(case: &Case) -> Result<(), TestCaseError> {
    // Concretise on a replica that applies one entry per batch.
    let mut reference = Replica::new();
    let mut entries = Vec::with_capacity(case.commands.len());
    let mut reference_replies = Vec::new();
    let mut stamp = 1_000_000u64;
    for (i, a) in case.commands.iter().enumerate() {
        stamp += case.steps[i];
        let entry = (i as u64 + 1, Command { stamped_at_ms: stamp, operation: concretise(&reference, a, stamp) });
        reference_replies.extend(reference.apply(std::slice::from_ref(&entry)));
        entries.push(entry);
    }
    let expected_digest = reference.digest();
    let rebuilt = LiveIndex::load(&reference.db).expect("reload index");
    prop_assert_eq!(&reference.index, &rebuilt, "the live index kept by apply differs from one rebuilt from disk");

    // The same entries, cut two other ways.
    let mut cuts: Vec<Vec<usize>> = vec![vec![0]];
    let mut random = vec![0];
    for (i, cut) in case.cuts.iter().enumerate().skip(1) {
        if *cut {
            random.push(i);
        }
    }
    cuts.push(random);
    for starts in cuts {
        let mut replica = Replica::new();
        let mut replies = Vec::new();
        for (n, start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(entries.len());
            replies.extend(replica.apply(&entries[*start..end]));
        }
        prop_assert_eq!(&replies, &reference_replies, "replies differ with batches starting at {:?}", starts);
        prop_assert_eq!(
            replica.digest(),
            expected_digest,
            "state digests differ with batches starting at {:?}",
            starts
        );
        prop_assert_eq!(&replica.index, &reference.index, "live indexes differ with batches starting at {:?}", starts);
    }
    Ok(())
}

#[test]
fn apply_is_independent_of_batch_boundaries() {
    let seed: u64 =
        std::env::var("DROVER_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let cases: u32 = std::env::var("DROVER_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    if let Err(e) = runner.run(&case(), |c| check(&c)) {
        panic!("apply depends on batching (replay with DROVER_PROPTEST_SEED={seed}): {e}");
    }
}
