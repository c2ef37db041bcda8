"""A Python worker process for the tests and the benchmark.

Handlers (``--mode``):
- ``record``: run for the payload's number of milliseconds, appending
  ``TASK TOKEN ATTEMPT KIND UNIX_NANOS`` to ``--record`` every 10 ms while
  the lease is valid (KIND start, tick, end), like ``drover worker
  --builtin record:FILE``;
- ``noop``: succeed at once (async);
- ``cancel``: wait for the cancel (async: CancelledError; ``--sync``: poll
  ``task.cancelled`` in a thread), then write ``TASK cancelled`` to ``--record``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

import drover


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--callback", required=True)
    p.add_argument("--id", default=None)
    p.add_argument("--mode", default="record", choices=["record", "noop", "cancel"])
    p.add_argument("--record", default=None)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--health-file", default=None)
    p.add_argument("--unhealthy-after", type=float, default=30.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = drover.Worker(a.endpoints, worker_id=a.id, shutdown_grace=a.grace, health_file=a.health_file,
                      unhealthy_after=a.unhealthy_after)
    fd = os.open(a.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if a.record else -1

    def line(task: drover.Task, kind: str) -> None:
        # One write per line with O_APPEND: lines from several processes never interleave.
        os.write(fd, f"{task.id} {task.fencing_token} {task.attempt} {kind} {time.time_ns()}\n".encode())

    async def record(task: drover.Task) -> bytes:
        ms = int(task.payload or b"0")
        line(task, "start")
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            await asyncio.sleep(0.01)
            # The SDK stops the handler once the lease lapses; checking here
            # as well keeps a tick from being written on a stale lease.
            if not task.lease_valid():
                raise drover.Retry("lease lapsed")
            line(task, "tick")
        line(task, "end")
        return str(ms).encode()

    async def noop(task: drover.Task) -> bytes:
        return b""

    async def cancel_async(task: drover.Task) -> bytes:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            os.write(fd, f"{task.id} cancelled {task.cancelled}\n".encode())
            raise
        return b"not cancelled"

    def cancel_sync(task: drover.Task) -> bytes:
        deadline = time.monotonic() + 60
        while not task.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(fd, f"{task.id} cancelled {task.cancelled}\n".encode())
        return b"stopped"

    fn = {"record": record, "noop": noop, "cancel": cancel_sync if a.sync else cancel_async}[a.mode]
    w.register(a.callback, fn, a.concurrency)
    stats = w.run()
    print(f"stats: {stats}", flush=True)


if __name__ == "__main__":
    main()
