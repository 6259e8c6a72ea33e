"""gc and an upload of the same content at the same time, on SQLite and PostgreSQL, with
the filesystem store and with S3 (SeaweedFS): never a blob row whose file is gone.

gc deletes a collected blob's row, then its file. If the same bytes are uploaded again
in between, the upload stores the file again and records the row, and gc must not then
delete the file; if gc deletes the file first, the upload must not record a row for it."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text, update

from tether.blobs import open_store
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import Blob, utcnow
from tether.problems import Problem
from tether.publish.service import Publisher
from tests.conftest import S3_BUCKET

pytestmark = [pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True),
              pytest.mark.parametrize("blobs", ["fs", "s3"])]

DATA = b"the same artifact, built again"
D = hashlib.sha256(DATA).hexdigest()
ADMIN = SimpleNamespace(require=lambda *a, **k: None)  # gc's own permission check is tested elsewhere


@pytest.fixture
def pub(request, database_url, blobs, tmp_path, monkeypatch):
    if blobs == "s3":
        s3 = request.getfixturevalue("seaweed")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        store = open_store(f"s3://{S3_BUCKET}/race-{uuid.uuid4().hex[:8]}", endpoint_url=s3.endpoint, region=s3.region)
    else:
        store = open_store(str(tmp_path / "blobs"))
    db = Database(database_url)
    db.migrate()
    with db.write() as s:
        s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                       "VALUES (1, 's', '', :t, false)"), {"t": utcnow()})
    settings = HubSettings(data_dir=tmp_path, database_url=database_url)
    return Publisher(settings, db, store)


def upload(pub: Publisher) -> None:
    pub.write_blob(None, 1, D, iter([DATA]), declared=None, now=utcnow())  # type: ignore[arg-type]


def collectable(pub: Publisher) -> None:
    """No build names the blob; its lease is over and it is older than the grace."""
    with pub.db.write() as s:
        s.execute(update(Blob).where(Blob.digest == D)
                  .values(leased_until=utcnow() - timedelta(hours=2), created_at=utcnow() - timedelta(hours=2)))


def rows(pub: Publisher) -> list[str]:
    with pub.db.read() as s:
        return list(s.scalars(select(Blob.digest)))


def test_gc_keeps_the_file_of_a_blob_stored_again_after_it_deleted_the_row(pub, monkeypatch):
    upload(pub)
    collectable(pub)
    delete_files = pub._delete_files

    def upload_between(digests):  # the rows are gone, the files not yet
        assert rows(pub) == []
        upload(pub)
        delete_files(digests)

    monkeypatch.setattr(pub, "_delete_files", upload_between)
    assert pub.gc(ADMIN, now=utcnow())["blobs_removed"] == 1
    assert rows(pub) == [D]
    assert pub.store.get(D) == DATA  # the row has its file


def test_an_upload_whose_file_gc_deleted_meanwhile_is_refused_and_records_nothing(pub, monkeypatch):
    upload(pub)
    collectable(pub)
    record = pub._record_blobs

    def gc_between(*args, **kwargs):  # stored; gc runs before the upload records it
        assert pub.gc(ADMIN, now=utcnow())["blobs_removed"] == 1
        return record(*args, **kwargs)

    monkeypatch.setattr(pub, "_record_blobs", gc_between)
    with pytest.raises(Problem) as e:
        upload(pub)
    assert e.value.status == 503 and "send it again" in e.value.detail
    assert rows(pub) == [] and not pub.store.exists(D)
    monkeypatch.undo()
    upload(pub)  # sent again: stored and recorded
    assert rows(pub) == [D] and pub.store.get(D) == DATA


def test_gc_deletes_the_file_when_nothing_came_back(pub):
    upload(pub)
    collectable(pub)
    assert pub.gc(ADMIN, now=utcnow())["blobs_removed"] == 1
    assert rows(pub) == [] and not pub.store.exists(D)


# -- files no row names (a crash between storing and recording) -----------------------------------

ORPHAN = b"stored, then the hub died before recording it"
O = hashlib.sha256(ORPHAN).hexdigest()


def test_gc_sweeps_a_file_no_row_names_once_it_is_a_day_old(pub):
    pub.store.put(O, ORPHAN)  # no row: as after a crash between the two steps
    upload(pub)  # recorded: never swept, whatever its age
    with pub.db.write() as s:
        s.execute(update(Blob).where(Blob.digest == D).values(leased_until=utcnow() + timedelta(days=30)))
    assert pub.gc(ADMIN, now=utcnow())["orphans_removed"] == 0  # young: may be an upload about to record
    assert pub.store.exists(O)
    later = utcnow() + timedelta(days=1, hours=1)
    assert pub.gc(ADMIN, now=later, dry_run=True)["orphans_removed"] == 0 and pub.store.exists(O)
    assert pub.gc(ADMIN, now=later)["orphans_removed"] == 1
    assert not pub.store.exists(O)
    assert rows(pub) == [D] and pub.store.get(D) == DATA
