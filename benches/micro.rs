//! Micro-benchmarks of the hot paths inside a node:
//! - applying a 100-task `Schedule` command into a RocksDB write batch;
//! - encoding keys and log entries;
//! - picking ready tasks from the live index (queue pop).
//!
//! Run: `cargo bench --bench micro`. These measure speed only; behaviour is
//! tested in `tests/` and the unit tests.

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use drover::domain::{CallbackConfig, Command, NewTask, Operation};
use drover::store::index::{IndexOp, LiveIndex, QueueSlot};
use drover::store::{keys, open_db, Applier, ApplyBatch};

fn schedule_command(n: usize, stamp: u64) -> Command {
    let tasks = (0..n)
        .map(|i| NewTask {
            callback: "bench".into(),
            payload: vec![b'x'; 64],
            priority: (i % 10) as u8,
            run_at_ms: stamp,
            idempotency_key: None,
            collection: None,
        })
        .collect();
    Command { stamped_at_ms: stamp, operation: Operation::Schedule { tasks, auto_register: false } }
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path()).expect("db");
    let mut applier = Applier::load(&db).expect("applier");
    applier.callbacks.insert("bench".into(), CallbackConfig::with_defaults("bench"));
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(100));
    let mut log_index = 1;
    g.bench_function("schedule_100_tasks_write_batch", |b| {
        b.iter_batched(
            || schedule_command(100, 1_000),
            |cmd| {
                let mut batch = ApplyBatch::new(&db);
                let r = applier.apply(&mut batch, log_index, &cmd).expect("apply");
                applier.write_counters(&mut batch).expect("counters");
                let (wb, ops, _) = batch.finish().expect("finish");
                db.write(wb).expect("write");
                log_index += 1;
                black_box((r, ops.len()))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("encoding");
    g.bench_function("pending_key", |b| {
        b.iter(|| black_box(keys::pending(black_box("send_email"), None, 5, 1_795_000_000_000, 123_456)))
    });
    g.bench_function("task_key", |b| b.iter(|| black_box(keys::task(black_box(123_456)))));
    let cmd = schedule_command(100, 1_000);
    g.bench_function("command_100_tasks_bincode", |b| b.iter(|| black_box(drover::encoding::encode(black_box(&cmd)))));
    let bytes = drover::encoding::encode(&cmd);
    g.bench_function("command_100_tasks_decode", |b| {
        b.iter(|| black_box(drover::encoding::decode::<Command>(black_box(&bytes)).expect("decode")))
    });
    g.finish();
}

fn queue_pop(c: &mut Criterion) {
    let mut index = LiveIndex::default();
    for id in 0..100_000u64 {
        index.apply(IndexOp::AddPending(QueueSlot {
            callback: "bench".into(),
            collection: None,
            priority: (id % 10) as u8,
            run_at_ms: id,
            id,
        }));
    }
    let skip: HashSet<u64> = (0..1_000).collect();
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(256));
    g.bench_function("pick_256_of_100k_pending", |b| {
        b.iter(|| black_box(index.pick("bench", 200_000, 256, &skip, 10_000)))
    });
    g.finish();
}

criterion_group!(benches, apply, encoding, queue_pop);
criterion_main!(benches);
