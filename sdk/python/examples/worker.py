"""A drover worker with a graceful shutdown: it sends the emails that
``fastapi_app.py`` schedules (callback ``send_email``).

    export DROVER_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    python sdk/python/examples/worker.py

On SIGTERM (``docker stop``, Kubernetes, systemd) or Ctrl-C it takes no new
task, lets the running ones finish within ``shutdown_grace`` and reports
them, then exits 0. A second signal cuts the grace short: the handlers still
running are cancelled and their tasks retried elsewhere. Run several: each
task runs on one worker at a time, and a task whose worker dies runs again
elsewhere once its lease lapses.
"""

import asyncio
import json
import logging
import os
import sys

import drover

ENDPOINTS = os.environ.get("DROVER_ENDPOINTS", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
#: How long "sending" takes here (a stand-in for an SMTP call).
SEND_SECONDS = float(os.environ.get("SEND_SECONDS", "0.2"))

log = logging.getLogger("email-worker")

worker = drover.Worker(
    ENDPOINTS,
    # Stable across restarts, so that the leader re-attaches its tasks.
    worker_id=os.environ.get("WORKER_ID"),
    shutdown_grace=20,
    # For a container's health check: present while connected.
    health_file=os.environ.get("HEALTH_FILE"),
)


class SmtpBusy(Exception):
    """A transient failure of the mail server."""


async def deliver(to: str, subject: str, dedup: str) -> None:
    """Send one email. ``dedup`` lets the mail service drop a second send
    of the same task (a retry after this process was cut off)."""
    await asyncio.sleep(SEND_SECONDS)


@worker.handler("send_email", concurrency=8)
async def send_email(task: drover.Task) -> str:
    email = json.loads(task.payload)
    to = str(email.get("to", ""))
    if "@" not in to:
        raise drover.Fatal(f"not an email address: {to!r}")  # FAILED, never retried
    log.info("task %d (attempt %d): sending %r to %s", task.id, task.attempt, email.get("subject"), to)
    try:
        await deliver(to, str(email.get("subject", "")), dedup=f"{task.id}:{task.fencing_token}")
    except SmtpBusy as e:
        raise drover.Retry(f"smtp busy: {e}", retry_after=30) from e  # retried with backoff
    return f"sent to {to}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = worker.run()  # returns after SIGTERM/SIGINT and the drain
    print(f"worker stopped: {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
