"""The leader SIGKILLed while Python workers run 1,000 tasks: every task
succeeds, and no two runs of a task overlap."""

from __future__ import annotations

from pathlib import Path

import drover
from support import Cluster, WorkerProc, assert_no_overlap, runs, wait_until

TASKS = 1000


def test_killing_the_leader_while_1000_tasks_run(fresh_cluster: Cluster, tmp_path: Path) -> None:
    c = fresh_cluster
    rec = tmp_path / "rec"
    with drover.Client(c.endpoints, deadline=30) as client:
        client.register_callback("f_batch", lease=2, backoff_initial=0.1, backoff_max=1)
        workers = [
            WorkerProc(c.endpoint, tmp_path / f"{i}.log", "--callback", "f_batch", "--concurrency", "32",
                       "--id", f"fw{i}", "--record", str(rec))
            for i in range(2)
        ]
        try:
            for _ in range(TASKS // 250):
                client.schedule_batch([drover.TaskSpec("f_batch", b"200") for _ in range(250)])

            def succeeded() -> int:
                return len(client.list("f_batch", state=drover.TaskState.SUCCEEDED))

            wait_until("some tasks to succeed", lambda: succeeded() >= 100, 60, every=0.2)
            leader = c.leader()
            c.kill(leader)
            done_at_kill = succeeded()
            assert done_at_kill <= TASKS // 2, f"{done_at_kill} tasks had ended before the leader was killed"
            wait_until("every task to succeed", lambda: succeeded() == TASKS, 180, every=0.5)
            assert c.leader().id != leader.id
        finally:
            for w in workers:
                w.terminate()
    r = runs(rec)
    assert len(r) == TASKS, f"{len(r)} tasks ran"
    assert all(any(x.ended for x in rs) for rs in r.values())
    assert_no_overlap(rec)


def test_a_running_task_survives_a_leader_change_by_re_attaching(fresh_cluster: Cluster, tmp_path: Path) -> None:
    c = fresh_cluster
    rec = tmp_path / "rec"
    with drover.Client(c.endpoints, deadline=30) as client:
        client.register_callback("f_long", lease=5)
        w = WorkerProc(c.endpoint, tmp_path / "w.log", "--callback", "f_long", "--id", "long", "--record", str(rec))
        try:
            s = client.schedule("f_long", b"4000")
            wait_until("the run to start", lambda: runs(rec).get(s.id), 20)
            c.kill(c.leader())
            t = wait_until("the task to succeed",
                           lambda: (lambda t: t if t.state == drover.TaskState.SUCCEEDED else None)(client.get(s.id)),
                           30)
            assert t.attempts == 1, "the worker re-attached its run to the new leader; nothing was re-run"
            r = runs(rec)[s.id]
            assert len(r) == 1 and r[0].ended
        finally:
            w.terminate()
