"""Test support: a cluster of real `drover server` processes on loopback,
worker processes, a cuttable TCP proxy, record files and waits on conditions."""

from __future__ import annotations

import os

import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import grpc

from drover.v1 import drover_pb2 as pb
from drover.v1 import drover_pb2_grpc as rpc

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def drover_bin() -> str:
    """The server binary: $DROVER_BIN, else target/release/drover of this repo."""
    b = os.environ.get("DROVER_BIN") or str(REPO / "target" / "release" / "drover")
    if not os.access(b, os.X_OK):
        raise RuntimeError(f"no drover binary at {b}: build it (cargo build --release) or set DROVER_BIN")
    return b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, f: Callable[[], Optional[T]], timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll ``f`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Node:
    def __init__(self, node_id: int, addr: str, data: Path, log: Path) -> None:
        self.id, self.addr, self.data, self.log = node_id, addr, data, log
        self.proc: Optional[subprocess.Popen[bytes]] = None


def make_certs(out: Path, nodes: int) -> Path:
    """A throwaway CA, node and client certificates (`drover admin certs`):
    ca.pem, node-I.pem/node-I-key.pem, client.pem/client-key.pem in ``out``."""
    subprocess.run([drover_bin(), "admin", "certs", "--out", str(out), "--nodes", str(nodes)], check=True,
                   capture_output=True)
    return out


class Cluster:
    """``n`` `drover server` processes with their own data dirs; node 1 bootstraps.

    ``tls``: a directory of :func:`make_certs` certificates: the nodes then
    serve TLS (verifying client certificates when given) and authenticate
    each other with their certificates, as the README's TLS setup does.
    """

    def __init__(self, n: int, root: Path, flags: Optional[List[str]] = None, tls: Optional[Path] = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.flags = ["--auto-register"] + (flags or [])
        self.tls = tls
        self.nodes = [
            Node(i, f"127.0.0.1:{free_port()}", root / f"node-{i}", root / f"node-{i}.log") for i in range(1, n + 1)
        ]
        peers = ",".join(f"{x.id}={x.addr}" for x in self.nodes)
        for x in self.nodes:
            args = [drover_bin(), "server", "--id", str(x.id), "--listen", x.addr, "--data-dir", str(x.data),
                    "--peers", peers] + (["--bootstrap"] if x.id == 1 else []) + self.flags
            if tls is not None:
                cert, key, ca = (str(tls / f) for f in (f"node-{x.id}.pem", f"node-{x.id}-key.pem", "ca.pem"))
                args += ["--tls-cert", cert, "--tls-key", key, "--client-ca", ca,
                         "--peer-ca", ca, "--peer-cert", cert, "--peer-key", key]
            with open(x.log, "ab") as log:
                x.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env={**os.environ, "RUST_LOG": "info"})
        self.leader(timeout=30)

    @property
    def endpoints(self) -> List[str]:
        return [x.addr for x in self.nodes]

    @property
    def endpoint(self) -> str:
        return ",".join(self.endpoints)

    @property
    def ca(self) -> Optional[str]:
        """The CA file to trust (TLS clusters), else None."""
        return str(self.tls / "ca.pem") if self.tls is not None else None

    def channel(self, addr: str) -> grpc.Channel:
        """A blocking channel to one node (over TLS for a TLS cluster)."""
        if self.tls is None:
            return grpc.insecure_channel(addr)
        return grpc.secure_channel(addr, grpc.ssl_channel_credentials((self.tls / "ca.pem").read_bytes()))

    def node_status(self, node: Node) -> Optional[pb.NodeStatusResponse]:
        with self.channel(node.addr) as ch:
            try:
                return rpc.ClusterStub(ch).NodeStatus(pb.NodeStatusRequest(), timeout=1)
            except grpc.RpcError:
                return None

    def leader(self, timeout: float = 30) -> Node:
        """The running node that says it leads (waiting for one)."""

        def find() -> Optional[Node]:
            for x in self.nodes:
                if x.proc is not None and x.proc.poll() is None:
                    s = self.node_status(x)
                    if s is not None and s.role == "leader":
                        return x
            return None

        return wait_until("a leader", find, timeout)

    def kill(self, node: Node) -> None:
        """SIGKILL: no shutdown, no flush."""
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait()
            node.proc = None

    def log_tail(self, node: Node, lines: int = 30) -> str:
        return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        for x in self.nodes:
            if x.proc is not None:
                x.proc.send_signal(signal.SIGCONT)
                x.proc.kill()
                x.proc.wait()
                x.proc = None


class WorkerProc:
    """A Python worker process (tests/worker_main.py) logging to a file."""

    def __init__(self, endpoint: str, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "ab") as f:
            self.proc: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
                [sys.executable, str(HERE / "worker_main.py"), "--endpoints", endpoint, *args],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def terminate(self, timeout: float = 30) -> str:
        """SIGTERM, wait for a graceful exit; returns the log."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            code = self.proc.wait(timeout)
            self.proc = None
            assert code == 0, f"worker exited with {code}:\n{self.text()}"
        return self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Run:
    token: int
    attempt: int
    first_ns: int
    last_ns: int
    ended: bool


def runs(path: Path) -> Dict[int, List[Run]]:
    """Runs per task, in token order, from a record file (`TASK TOKEN ATTEMPT KIND NANOS`)."""
    by: Dict[int, Dict[int, Run]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        task, token, attempt, kind, ns = line.split()
        r = by.setdefault(int(task), {}).setdefault(int(token), Run(int(token), int(attempt), int(ns), int(ns), False))
        r.first_ns, r.last_ns = min(r.first_ns, int(ns)), max(r.last_ns, int(ns))
        r.ended |= kind == "end"
    return {t: [m[k] for k in sorted(m)] for t, m in sorted(by.items())}


def assert_no_overlap(path: Path) -> None:
    """NEVER-CONCURRENTLY: the runs of one task, in token order, never overlap in time."""
    bad = []
    for task, rs in runs(path).items():
        for a, b in zip(rs, rs[1:]):
            if a.last_ns >= b.first_ns:
                bad.append(f"task {task}: token {a.token} (until {a.last_ns}) overlaps token {b.token} "
                           f"(from {b.first_ns})")
    assert not bad, "NEVER-CONCURRENTLY violated:\n" + "\n".join(bad)


class Proxy:
    """A TCP proxy to one address that can cut every connection (a partition)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.open = True
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()




class InProcessWorker:
    """A :class:`drover.Worker` running on its own event loop in a thread."""

    def __init__(self, worker: "drover.Worker") -> None:
        import asyncio

        self.worker = worker
        self.stats: Optional["drover.WorkerStats"] = None
        self.error: Optional[BaseException] = None

        def run() -> None:
            try:
                self.stats = asyncio.run(worker.run_async())
            except BaseException as e:  # surfaced by stop()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 30) -> "drover.WorkerStats":
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats

    def __enter__(self) -> "InProcessWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


import drover  # noqa: E402  (for the annotations above)
