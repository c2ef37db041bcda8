"""Tasks/s of an RQ worker and a Celery worker (Redis broker) running no-op
jobs, for comparison with the drover Python worker (../bench.py).

    python run.py --tasks 10000      # needs redis-server on PATH, rq and celery installed

Each queues --tasks jobs first, then starts one worker process and reports
jobs per second between the first and the last completion.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(name: str, tasks: int, enqueue, worker_cmd, env) -> None:  # type: ignore[no-untyped-def]
    import redis

    r = redis.Redis.from_url(env["BENCH_REDIS"])
    r.flushdb()
    enqueue(tasks)
    proc = subprocess.Popen(worker_cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while int(r.get("done") or 0) < tasks:
        if time.monotonic() > deadline or proc.poll() not in (None, 0):
            raise SystemExit(f"{name}: only {int(r.get('done') or 0)} of {tasks} done")
        time.sleep(0.2)
    first, last = float(r.get("first")), float(r.get("last"))  # type: ignore[arg-type]
    proc.terminate()
    proc.wait()
    print(f"{name}: {tasks} jobs: {tasks / (last - first):.0f} jobs/s (first to last completion {last - first:.2f}s)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--fork-tasks", type=int, default=1000, help="jobs for RQ's default forking worker")
    a = p.parse_args()
    port = free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL)
    env = {**os.environ, "BENCH_REDIS": f"redis://127.0.0.1:{port}/0", "PYTHONPATH": str(HERE)}
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    time.sleep(0.5)  # redis-server's start (a benchmark, not a test)
    try:
        import redis
        from rq import Queue

        import jobs

        def rq_enqueue(n: int) -> None:
            q = Queue(connection=redis.Redis.from_url(env["BENCH_REDIS"]))
            for i in range(0, n, 500):
                q.enqueue_many([Queue.prepare_data(jobs.noop) for _ in range(min(500, n - i))])

        def celery_enqueue(n: int) -> None:
            for _ in range(n):
                jobs.celery_noop.delay()

        url = env["BENCH_REDIS"]
        bindir = Path(sys.executable).parent
        measure("rq SimpleWorker (no fork)", a.tasks, rq_enqueue,
                [str(bindir / "rq"), "worker", "--burst", "-u", url, "-w", "rq.worker.SimpleWorker"], env)
        measure("rq Worker (default: fork per job)", a.fork_tasks, rq_enqueue,
                [str(bindir / "rq"), "worker", "--burst", "-u", url], env)
        measure("celery worker --pool=solo", a.tasks, celery_enqueue,
                [str(bindir / "celery"), "-A", "jobs", "worker", "--pool=solo", "-l", "warning"], env)
        measure("celery worker --pool=prefork -c 2", a.tasks, celery_enqueue,
                [str(bindir / "celery"), "-A", "jobs", "worker", "--pool=prefork", "-c", "2", "-l", "warning"], env)
    finally:
        redis_proc.terminate()
        redis_proc.wait()


if __name__ == "__main__":
    main()
