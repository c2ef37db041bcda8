"""A chain of tasks: fetch a text, count its words, write a report. Each
step runs once its parent succeeded, and reads its parent's result.

    export DROVER_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    python sdk/python/examples/chain.py "the quick brown fox jumps over the lazy dog"

The first two steps are scheduled as one batch (all or nothing; the second
names the first by its ``ref``); the report is scheduled after the count by
its task id. A failed step cancels the steps after it. The script runs the
worker for the three callbacks itself (``async with drover.Worker``), waits
for the report and prints it.
"""

import asyncio
import json
import os
import sys
import time
from collections import Counter

import drover

ENDPOINTS = os.environ.get("DROVER_ENDPOINTS", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")

worker = drover.Worker(ENDPOINTS, shutdown_grace=5)


def parent_result(task: drover.Task) -> bytes:
    """The result of the task's one parent (it succeeded: the chain's
    default policy runs a step only then)."""
    assert task.upstream is not None, "a step after another has upstream results"
    (parent,) = task.upstream.parents
    if parent.result is None:
        raise drover.Retry(f"the result of task {parent.task_id} did not fit in the assignment")
    return parent.result


@worker.handler("chain.fetch")
async def fetch(task: drover.Task) -> bytes:
    # A stand-in for a download: the text is the payload.
    return task.payload.strip().lower()


@worker.handler("chain.count")
def count(task: drover.Task) -> str:
    # A plain function runs in a thread: fine for CPU-bound steps.
    words = Counter(parent_result(task).decode().split())
    top, n = words.most_common(1)[0] if words else ("", 0)
    return json.dumps({"words": sum(words.values()), "distinct": len(words), "top": top, "top_count": n})


@worker.handler("chain.report")
async def report(task: drover.Task) -> str:
    c = json.loads(parent_result(task))
    return f"{c['words']} words, {c['distinct']} distinct; the most frequent is {c['top']!r} ({c['top_count']}x)"


async def wait_finished(client: drover.AsyncClient, task_id: int, timeout: float = 60) -> drover.TaskInfo:
    deadline = time.monotonic() + timeout
    while True:
        t = await client.get(task_id)
        if t.state.finished or time.monotonic() > deadline:
            return t
        await asyncio.sleep(0.1)


async def main(text: str) -> int:
    async with drover.AsyncClient(ENDPOINTS) as client:
        for callback in worker.callbacks:
            await client.register_callback(callback, max_attempts=3, lease=10, timeout=30, backoff_initial=0.5)
        fetched, counted = await client.schedule_batch([
            drover.TaskSpec("chain.fetch", text, ref="fetch"),
            drover.TaskSpec("chain.count", after_refs=["fetch"]),
        ])
        reported = await client.schedule("chain.report", after=[counted.id])
        print(f"scheduled: fetch {fetched.id} -> count {counted.id} -> report {reported.id}", flush=True)
        async with worker:  # runs while the block runs; drains at its end
            t = await wait_finished(client, reported.id)
        if t.state != drover.TaskState.SUCCEEDED:
            print(f"report task {t.id} ended {t.state}: {t.last_error}", file=sys.stderr)
            return 1
        assert t.result is not None and t.dependencies is not None
        print(f"report (after task {t.dependencies.parents[0]}): {t.result.decode()}", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(" ".join(sys.argv[1:]) or "the quick brown fox jumps over the lazy dog the end")))
