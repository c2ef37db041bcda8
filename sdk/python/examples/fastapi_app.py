"""A web app that schedules drover tasks and reads their state (FastAPI).

    pip install ./sdk/python fastapi uvicorn
    export DROVER_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    uvicorn --app-dir sdk/python/examples fastapi_app:app

    curl -X POST localhost:8000/emails -H 'content-type: application/json' \\
         -d '{"to": "ada@example.com", "subject": "welcome", "key": "welcome-ada"}'
    curl localhost:8000/tasks/1
    curl -X POST localhost:8000/tasks/1/cancel

The app shares one :class:`drover.AsyncClient` (made at startup, closed at
shutdown): it fails over between the nodes and retries safely on its own.
The emails are sent by ``worker.py``, next to this file.
"""

import json
import os
from contextlib import asynccontextmanager
from typing import Annotated, AsyncGenerator, Optional

import grpc
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import drover

ENDPOINTS = os.environ.get("DROVER_ENDPOINTS", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
CALLBACK = "send_email"


class Email(BaseModel):
    to: str
    subject: str
    body: str = ""
    delay: float = Field(0, ge=0, description="seconds to wait before sending")
    key: Optional[str] = Field(None, description="idempotency key: the same key schedules one email")


class Accepted(BaseModel):
    id: int
    created: bool
    state: str


class TaskView(BaseModel):
    id: int
    state: str
    finished: bool
    attempts: int
    result: Optional[str]
    last_error: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
    async with drover.AsyncClient(ENDPOINTS) as client:
        # Idempotent: every replica of the app may register at startup.
        await client.register_callback(CALLBACK, max_attempts=5, lease=30, timeout=60, backoff_initial=1)
        app.state.drover = client
        yield


app = FastAPI(title="drover example: emails", lifespan=lifespan)


def drover_client(request: Request) -> drover.AsyncClient:
    client: drover.AsyncClient = request.app.state.drover
    return client


Drover = Annotated[drover.AsyncClient, Depends(drover_client)]

# What a failed drover call means to this app's callers.
HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


@app.exception_handler(drover.RpcError)
async def drover_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, drover.RpcError)
    return JSONResponse({"detail": exc.message}, status_code=HTTP_STATUS.get(exc.code, 502))


@app.post("/emails", status_code=202)
async def send_email(email: Email, client: Drover) -> Accepted:
    """Schedule an email; a repeated ``key`` returns the first task."""
    payload = json.dumps({"to": email.to, "subject": email.subject, "body": email.body})
    s = await client.schedule(CALLBACK, payload, delay=email.delay or None, key=email.key)
    return Accepted(id=s.id, created=s.created, state=str(s.state))


def view(t: drover.TaskInfo) -> TaskView:
    result = t.result.decode(errors="replace") if t.result is not None else None
    return TaskView(id=t.id, state=str(t.state), finished=t.state.finished, attempts=t.attempts, result=result,
                    last_error=t.last_error)


@app.get("/tasks/{task_id}")
async def get_task(task_id: int, client: Drover) -> TaskView:
    """A task's state, attempts, result and last error (404: no such task)."""
    return view(await client.get(task_id))


@app.post("/tasks/{task_id}/cancel")
async def cancel_task(task_id: int, client: Drover) -> TaskView:
    """Cancel a task (a running one is stopped on its worker)."""
    state = await client.cancel(task_id)
    if state not in (drover.TaskState.CANCELLED, drover.TaskState.RUNNING):
        raise HTTPException(409, f"task {task_id} already ended: {state}")
    return view(await client.get(task_id))
