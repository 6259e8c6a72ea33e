"""Publishing runs on every storage combination: SQLite or PostgreSQL, filesystem or S3 blobs."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import S3_BUCKET
from tests.hubproc import HubProcess, unique


@pytest.fixture(scope="session", params=["sqlite-fs", "postgresql-fs", "postgresql-s3"])
def pub_hub(request, tmp_path_factory):
    backend, blobs = request.param.split("-")
    url = None
    env = {}
    if backend == "postgresql":
        url = request.getfixturevalue("pg_server").create_database(unique("pub").replace("-", "_"))
    if blobs == "s3":
        s3 = request.getfixturevalue("seaweed")
        env = {
            "TETHER_BLOB_STORE": f"s3://{S3_BUCKET}/hub-{uuid.uuid4().hex[:8]}",
            "TETHER_S3_ENDPOINT_URL": s3.endpoint,
            "TETHER_S3_REGION": s3.region,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        }
    proc = HubProcess(tmp_path_factory.mktemp(f"pubhub-{request.param}") / "data", database_url=url, env=env).start()
    proc.backend = request.param
    yield proc
    proc.stop()
