"""Publishing on the hub: blobs in, manifests committed atomically, files out, and
garbage collection. :class:`Publisher` is what the API holds; its parts live beside it,
one rule each in one place:

==============  ==========================================================================
``intake``      blobs in: ``blobs/missing`` and its leases, single, batch and resumable
                uploads, verified by the store and recorded once durable
``commit``      builds made visible in one transaction (a manifest, or ``same_as``), and
                what a commit refuses (taken ids, nesting paths), checked early too
``read``        downloads: what a path names, who may read it, the bytes
``gc``          retention, unreferenced blobs past their lease, packs, abandoned uploads
``storage``     what the parts share: :class:`Target`, the state, SQL fragments
==============  ==========================================================================

The order of trust: a client's digest is a claim until the store has hashed the
bytes itself; a build is invisible until its one commit transaction lands; a
"you already have it" answer pins the blob (``leased_until``) so garbage
collection can't take it before that commit.

The parts are mixins of one object rather than objects of their own: they call each
other (an upload refuses a build id the commit would refuse; gc re-stores a pack's live
blobs the way an upload stores them), and code that replaces one of those methods on a
publisher (the gc races in the tests) must be seen by the others.
"""

from __future__ import annotations

import threading

from sqlalchemy import func

from tether.auth.identities import get_space
from tether.auth.policy import Resource
from tether.auth.service import AuthContext
from tether.config import HubSettings, PublishType
from tether.db import Database
from tether.problems import bad_request
from tether.publish.commit import Commits
from tether.publish.core import PathError, build_prefix
from tether.publish.gc import Collector
from tether.publish.intake import Intake, _size_query, _UploadHashes
from tether.publish.read import Reads, build_info
from tether.publish.storage import Target, _sqlite_insert


class Publisher(Intake, Commits, Reads, Collector):
    """The publishing side of the hub (see the module's docstring for its parts)."""

    def __init__(self, settings: HubSettings, db: Database, store):
        self.settings = settings
        self.db = db
        self.store = store
        self.uploads_dir = settings.data_dir / "uploads"
        self._upload_hashes = _UploadHashes()
        # digest -> until when an upload recording it must find its file (S3; see _claim_placed)
        self._collected: dict[str, float] = {}
        self._collected_lock = threading.Lock()

    # ------------------------------------------------------------ authorization

    def target(self, ctx: AuthContext, space: str, build_type: str, build_id: str, action="publish.write") -> Target:
        try:
            config = self.settings.publish_types.get(build_type) or PublishType()
            prefix = build_prefix(config.path, build_type, build_id)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        # Authorize before revealing whether the space exists. The scope must cover the
        # whole build: a build is published, and later read, as one.
        ctx.require(action, Resource(space=space, path=prefix))
        with self.db.read() as s:
            sp = get_space(s, space)
        return Target(sp.id, space, build_type, build_id, prefix, config, sp.public_builds)


__all__ = ["Publisher", "Target", "build_info", "func", "_size_query", "_sqlite_insert"]
