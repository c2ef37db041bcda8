"""The examples in sdk/python/examples, run against a real cluster: the
FastAPI app (with its TestClient) and the email worker, the worker's
graceful shutdown, and the chain of tasks."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

import drover
from support import REPO, Cluster, wait_until

EXAMPLES = REPO / "sdk" / "python" / "examples"


class Example:
    """An example script run as a process with DROVER_ENDPOINTS set."""

    def __init__(self, cluster: Cluster, log: Path, script: str, *args: str, **env: str) -> None:
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / script), *args], stdout=f, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "DROVER_ENDPOINTS": cluster.endpoint, **env},
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.proc.args} did not exit within {timeout}s:\n{self.text()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fastapi_app(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DROVER_ENDPOINTS", cluster.endpoint)
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLES / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module.app


def test_the_fastapi_app_schedules_tasks_and_reads_their_state(
    cluster: Cluster, client: drover.Client, fastapi_app: Any, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(fastapi_app) as http:
        r = http.post("/emails", json={"to": "ada@example.com", "subject": "welcome", "key": "welcome-ada"})
        assert r.status_code == 202, r.text
        first: Dict[str, Any] = r.json()
        assert first["created"] and first["state"] == "ready"
        again = http.post("/emails", json={"to": "ada@example.com", "subject": "welcome", "key": "welcome-ada"})
        assert again.json() == {**first, "created": False}, "the same key schedules one email"
        bad = http.post("/emails", json={"to": "nobody", "subject": "x"}).json()
        later = http.post("/emails", json={"to": "bob@example.com", "subject": "later", "delay": 3600}).json()
        assert later["state"] == "scheduled"
        assert http.get(f"/tasks/{first['id']}").json()["state"] == "ready", "no worker yet"
        assert http.get("/tasks/987654321").status_code == 404
        assert http.post("/emails", json={"to": "x@example.com"}).status_code == 422
        cancelled = http.post(f"/tasks/{later['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"

        worker = Example(cluster, tmp_path / "worker.log", "worker.py", WORKER_ID="example-worker")
        try:
            def ended(task_id: int) -> Optional[Dict[str, Any]]:
                v: Dict[str, Any] = http.get(f"/tasks/{task_id}").json()
                return v if v["finished"] else None

            done = wait_until("the worker example to send the email", lambda: ended(first["id"]), 30)
            assert (done["state"], done["result"], done["attempts"]) == ("succeeded", "sent to ada@example.com", 1)
            failed = wait_until("the bad address to fail", lambda: ended(bad["id"]), 30)
            assert failed["state"] == "failed" and "not an email address" in failed["last_error"], failed
            assert client.get(first["id"]).worker == "example-worker"
        finally:
            worker.proc.send_signal(signal.SIGTERM)
            code = worker.wait(30)
        assert code == 0 and "worker stopped: 2 started, 1 succeeded, 1 failed" in worker.text(), worker.text()


def test_the_worker_example_drains_on_sigterm(cluster: Cluster, client: drover.Client, tmp_path: Path) -> None:
    worker = Example(cluster, tmp_path / "worker.log", "worker.py", WORKER_ID="example-drain", SEND_SECONDS="3")
    try:
        s = client.schedule("send_email", json.dumps({"to": "carol@example.com", "subject": "slow"}))
        wait_until("the email to be sending",
                    lambda: (lambda t: t.state == drover.TaskState.RUNNING and t.worker == "example-drain")(
                        client.get(s.id)), 30)
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        log = worker.text()
        assert code == 0, log
        assert "worker stopped: 1 started, 1 succeeded, 0 failed" in log, log
        t = client.get(s.id)
        assert (t.state, t.attempts, t.result) == (drover.TaskState.SUCCEEDED, 1, b"sent to carol@example.com"), (
            "the running email finished before the exit")
    finally:
        worker.stop()


def test_the_chain_example(cluster: Cluster, tmp_path: Path) -> None:
    chain = Example(cluster, tmp_path / "chain.log", "chain.py", "b a b c b a")
    try:
        code = chain.wait(60)
    finally:
        chain.stop()
    out = chain.text()
    assert code == 0, out
    assert "scheduled: fetch " in out
    assert "6 words, 3 distinct; the most frequent is 'b' (3x)" in out, out
