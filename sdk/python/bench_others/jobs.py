"""No-op jobs for the RQ and Celery comparison (run.py): each records its
completion in Redis (a counter, and the first and last completion times)."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
_r = redis.Redis.from_url(URL)


def _done() -> None:
    now = time.time()
    p = _r.pipeline()
    p.incr("done")
    p.setnx("first", now)
    p.set("last", now)
    p.execute()


def noop() -> None:
    """The RQ job."""
    _done()


app = Celery("jobs", broker=URL)
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False


@app.task(name="noop")
def celery_noop() -> None:
    _done()
