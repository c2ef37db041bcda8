"""Fixtures: one shared 3-node cluster for most tests (each test uses its own
callbacks), and fresh clusters for tests that kill nodes."""

from __future__ import annotations

import os

# grpcio 1.62's fork handlers (on by default in its Python build) can
# deadlock a forked child before it execs (grpc/grpc#37259): the tests'
# subprocess.Popen on Python 3.9 (which forks; 3.10+ uses vfork, which runs
# no fork handlers) then hangs. Off before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

import drover  # noqa: E402
from support import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(3, tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(3, tmp_path / "cluster")
    yield c
    c.close()


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[drover.Client]:
    with drover.Client(cluster.endpoints, deadline=20) as c:
        yield c
