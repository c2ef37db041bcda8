"""Tasks/s executed by one worker process with a no-op handler.

    python sdk/python/bench.py --tasks 20000 --concurrency 64 [--rust]

Starts a local 3-node cluster (DROVER_BIN), schedules --tasks tasks, starts
one worker process (the Python SDK's asyncio no-op handler, or with --rust
`drover worker --builtin noop` for the server's ceiling), and reports the
tasks per second between the first start and the last success, read from
the tasks' replicated histories.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))

import drover  # noqa: E402
from support import Cluster, WorkerProc, drover_bin, wait_until  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rust", action="store_true", help="run drover worker --builtin noop instead")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(3, Path(tmp) / "cluster")
        try:
            with drover.Client(c.endpoints, deadline=30) as client:
                client.register_callback("bench_noop", lease=30)
                for i in range(0, a.tasks, 1000):
                    client.schedule_batch([drover.TaskSpec("bench_noop") for _ in range(min(1000, a.tasks - i))])
                log = Path(tmp) / "worker.log"
                if a.rust:
                    with open(log, "ab") as f:
                        proc = subprocess.Popen([drover_bin(), "worker", "--endpoint", c.endpoint, "--callback",
                                                 "bench_noop", "--concurrency", str(a.concurrency), "--builtin",
                                                 "noop"], stdout=f, stderr=subprocess.STDOUT)
                else:
                    w = WorkerProc(c.endpoint, log, "--callback", "bench_noop", "--mode", "noop",
                                   "--concurrency", str(a.concurrency))
                started = time.monotonic()
                wait_until("every task to succeed",
                           lambda: len(client.list("bench_noop", state=drover.TaskState.SUCCEEDED)) == a.tasks,
                           timeout=600, every=1.0)
                wall = time.monotonic() - started
                if a.rust:
                    proc.terminate()
                    proc.wait()
                else:
                    w.terminate()
                tasks = client.list("bench_noop")
                first = min(h.at for t in tasks for h in t.history if h.state == drover.TaskState.RUNNING)
                last = max(h.at for t in tasks for h in t.history if h.state == drover.TaskState.SUCCEEDED)
                kind = "rust drover worker --builtin noop" if a.rust else "python drover.Worker, async no-op"
                print(f"{kind}: {a.tasks} tasks, concurrency {a.concurrency}: "
                      f"{a.tasks / (last - first):.0f} tasks/s (first start to last success {last - first:.2f}s; "
                      f"wall incl. polling {wall:.1f}s)")
        finally:
            c.close()


if __name__ == "__main__":
    main()
