"""Fixtures: one shared 3-node cluster for most tests (each test uses its own
callbacks), and fresh clusters for tests that kill nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

import drover
from support import Cluster


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
