"""The shared SDK conformance scenarios (sdk/conformance/scenarios.json),
run with the Python worker: once with an async handler, once with a sync
one (each under its own callback names)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Dict, Set

import pytest

import drover
from support import REPO, Cluster, InProcessWorker, wait_until

SPEC = json.loads((REPO / "sdk" / "conformance" / "scenarios.json").read_text())


class Observed:
    """What the handlers saw, per task id (handlers run on other threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: Set[int] = set()
        self.saw_cancel: Set[int] = set()

    def start(self, task_id: int) -> None:
        with self.lock:
            self.started.add(task_id)

    def cancelled(self, task_id: int) -> None:
        with self.lock:
            self.saw_cancel.add(task_id)


def _after_work(task: drover.Task, p: Dict[str, Any]) -> bytes:
    """Steps 3-5 of the conformance handler (sdk/conformance/README.md)."""
    if task.attempt < p.get("retry_until_attempt", 0):
        after = p.get("retry_after_ms")
        raise drover.Retry(f"retry {task.attempt}", retry_after=after / 1000 if after else None)
    if "fatal" in p:
        raise drover.Fatal(p["fatal"])
    result = p.get("result", "ok")
    return (f"{result}:{task.attempt}" if p.get("echo_attempt") else result).encode()


def async_handler(seen: Observed) -> Any:
    async def handle(task: drover.Task) -> bytes:
        seen.start(task.id)
        p = json.loads(task.payload)
        if "sleep_ms" in p:
            await asyncio.sleep(p["sleep_ms"] / 1000)
        if p.get("wait_cancel"):
            try:
                await asyncio.wait_for(task.wait_cancelled(), 30)
            finally:
                if task.cancelled:
                    seen.cancelled(task.id)
            return b"stopped"
        return _after_work(task, p)

    return handle


def sync_handler(seen: Observed) -> Any:
    def handle(task: drover.Task) -> bytes:
        seen.start(task.id)
        p = json.loads(task.payload)
        end = time.monotonic() + p.get("sleep_ms", 0) / 1000
        while time.monotonic() < end and not task.cancelled:
            time.sleep(0.01)
        if p.get("wait_cancel"):
            end = time.monotonic() + 30
            while not task.cancelled and time.monotonic() < end:
                time.sleep(0.01)
            if task.cancelled:
                seen.cancelled(task.id)
            return b"stopped"
        return _after_work(task, p)

    return handle


def check(client: drover.Client, sc: Dict[str, Any], task_id: int, extra: Dict[str, Any], seen: Observed) -> None:
    exp = sc["expect"]
    want = drover.TaskState[exp["state"].upper()]
    t = wait_until(f"{sc['name']}: task {task_id} to end",
                   lambda: (lambda t: t if t.state.finished else None)(client.get(task_id)), 60)
    name = sc["name"]
    assert t.state == want, f"{name}: state {t.state}, expected {want} ({t.last_error})"
    assert t.attempts == exp["attempts"], f"{name}: {t.attempts} attempts"
    if "result" in exp:
        assert t.result == exp["result"].encode(), f"{name}: result {t.result!r}"
    if "error_contains" in exp:
        assert exp["error_contains"] in t.last_error, f"{name}: error {t.last_error!r}"
    if exp.get("in_dead_letters"):
        assert task_id in {x.id for x in client.list(t.callback, state=drover.TaskState.DEAD)}, name
    if "min_retry_gap_ms" in exp:
        ended = next(h.at for h in t.history if h.state == drover.TaskState.RETRY_WAIT and h.attempt == 1)
        rerun = next(h.at for h in t.history if h.state == drover.TaskState.RUNNING and h.attempt == 2)
        assert (rerun - ended) * 1000 >= exp["min_retry_gap_ms"] - 1, f"{name}: retried after {rerun - ended}s"
    if exp.get("started_not_before_run_at"):
        started = next(h.at for h in t.history if h.state == drover.TaskState.RUNNING)
        assert started >= t.run_at, f"{name}: started {started} before its run-at {t.run_at}"
    if exp.get("handler_saw_cancel"):
        assert task_id in seen.saw_cancel, f"{name}: the handler did not see the cancel"
    if "second_schedule_created" in exp:
        assert extra["second"].id == task_id and extra["second"].created == exp["second_schedule_created"], name


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_conformance(cluster: Cluster, client: drover.Client, kind: str) -> None:
    suffix = f"_py{kind}"
    for cb in SPEC["callbacks"]:
        client.register_callback(
            cb["name"] + suffix, max_attempts=cb["max_attempts"], lease=cb["lease_ms"] / 1000,
            timeout=cb["timeout_ms"] / 1000, backoff_initial=cb["backoff_initial_ms"] / 1000,
            backoff_max=cb["backoff_max_ms"] / 1000,
        )
    seen = Observed()
    handler = async_handler(seen) if kind == "async" else sync_handler(seen)
    w = drover.Worker(cluster.endpoints, worker_id=f"conformance-{kind}")
    for cb in SPEC["callbacks"]:
        w.register(cb["name"] + suffix, handler, 4)
    with InProcessWorker(w):
        ids: Dict[str, int] = {}
        extra: Dict[str, Dict[str, Any]] = {}
        for sc in SPEC["scenarios"]:
            payload = json.dumps(sc["payload"], separators=(",", ":")).encode()
            key = f"{sc['key']}{suffix}" if "key" in sc else None
            delay = sc["delay_ms"] / 1000 if "delay_ms" in sc else None
            s = client.schedule(sc["callback"] + suffix, payload, key=key, delay=delay)
            ids[sc["name"]] = s.id
            extra[sc["name"]] = {}
            if sc.get("action") == "schedule_twice":
                extra[sc["name"]]["second"] = client.schedule(sc["callback"] + suffix, payload, key=key, delay=delay)
        for sc in SPEC["scenarios"]:
            if sc.get("action") == "cancel_when_running":
                tid = ids[sc["name"]]
                wait_until(f"{sc['name']}: the handler to start", lambda: tid in seen.started, 30)
                assert client.cancel(tid) == drover.TaskState.RUNNING
        for sc in SPEC["scenarios"]:
            check(client, sc, ids[sc["name"]], extra[sc["name"]], seen)
    assert len(SPEC["scenarios"]) >= 10


