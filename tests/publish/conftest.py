"""Publishing runs on every storage combination: SQLite or PostgreSQL, filesystem or S3 blobs."""

from __future__ import annotations

import pytest

from tests.conftest import s3_env
from tests.hubproc import HubProcess, unique


@pytest.fixture(scope="session", params=["sqlite-fs", "postgresql-fs", "postgresql-s3", "replicas-fs", "replicas-s3"])
def pub_hub(request, tmp_path_factory):
    """A hub for publishing tests; "replicas-*": two replicas behind a round-robin balancer."""
    backend, blobs = request.param.split("-")
    if backend == "replicas":
        yield request.getfixturevalue("replica_set")(blobs)
        return
    url = None
    env = {}
    if backend == "postgresql":
        url = request.getfixturevalue("pg_server").create_database(unique("pub").replace("-", "_"))
    if blobs == "s3":
        env = s3_env(request.getfixturevalue("seaweed"))
    proc = HubProcess(tmp_path_factory.mktemp(f"pubhub-{request.param}") / "data", database_url=url, env=env).start()
    proc.backend = request.param
    yield proc
    proc.stop()
