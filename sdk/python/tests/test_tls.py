"""TLS: the client trusts the given CA and presents its certificate (mutual
TLS), against a stand-in Scheduler server (the drover server's own TLS is
covered by its tests)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest

import drover
from drover.v1 import drover_pb2 as pb
from drover.v1 import drover_pb2_grpc as rpc


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


class Scheduler(rpc.SchedulerServicer):
    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.Task:
        return pb.Task(id=request.task_id, callback="tls", state=pb.TASK_STATE_SUCCEEDED)


def test_the_client_speaks_mutual_tls(tmp_path: Path) -> None:
    make_certs(tmp_path)
    read = lambda n: (tmp_path / n).read_bytes()  # noqa: E731

    async def body() -> None:
        server = grpc.aio.server()
        rpc.add_SchedulerServicer_to_server(Scheduler(), server)
        creds = grpc.ssl_server_credentials([(read("server.key"), read("server.pem"))], read("ca.pem"), True)
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        try:
            ep = f"127.0.0.1:{port}"
            async with drover.AsyncClient(ep, ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "client.pem"),
                                          key=str(tmp_path / "client.key")) as c:
                t = await c.get(7)
                assert (t.id, t.callback, t.state) == (7, "tls", drover.TaskState.SUCCEEDED)
            async with drover.AsyncClient(ep, ca=str(tmp_path / "ca.pem"), deadline=1) as c:
                with pytest.raises(drover.RpcError) as e:
                    await c.get(7)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE, "no client certificate: refused"
        finally:
            await server.stop(0)

    asyncio.run(body())
