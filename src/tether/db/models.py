"""Database tables. Times are stored as timezone-aware UTC on every backend."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """DateTime that always comes back tz-aware UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="person")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublicKey(Base):
    """An SSH public key (it decides the user on the SSH transport) or an ed25519 signing key."""

    __tablename__ = "public_keys"
    __table_args__ = (UniqueConstraint("kind", "fingerprint", name="uq_public_keys_kind_fingerprint"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    algorithm: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Space(Base):
    __tablename__ = "spaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Default for builds published here when neither the publish nor the type says.
    public_builds: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Grant(Base):
    __tablename__ = "grants"
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    level: Mapped[int] = mapped_column(Integer)


class Token(Base):
    """A scoped token. Only the sha256 of its secret is kept.

    ``ancestry`` is ``/root/…/parent/`` so that revoking a token can reach every
    descendant with one prefix match.
    """

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ancestry: Mapped[str] = mapped_column(String(1024), default="/")
    minted_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    caveats: Mapped[dict] = mapped_column(JSON)
    # Ids along the chain (root..self) that carry a limit, per counter, fixed at mint
    # time: a use or a draw must be counted on each of them, atomically.
    limited: Mapped[dict] = mapped_column(JSON)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_uses: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    max_files: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    max_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_tokens_ancestry", "ancestry"),)

    @property
    def chain(self) -> list[str]:
        """Ids from the root down to this token."""
        return [p for p in self.ancestry.split("/") if p] + [self.id]


class AuditRecord(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(1024), default="")
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(1024), default="")
    # requests this record stands for: refusals of unauthenticated requests are
    # counted per source and reason over an interval (hub/audit.py, RefusalTally)
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # the last of those requests (``at`` is the first); None for a record of one request.
    # Reads by scoped tokens are counted per token and path too (hub/app.py, ReadTally).
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# ---------------------------------------------------------------- publishing


class Blob(Base):
    """A verified blob in the blob store. ``leased_until`` pins it against garbage
    collection between a "you already have it" answer (or an upload) and the commit."""

    __tablename__ = "blobs"
    # "Does this space hold a blob of N bytes?" (an upload started before hashing), asked
    # only of large sizes: a partial index, so small blobs add no entry (migration 0010).
    __table_args__ = (
        Index("ix_blobs_large_size", "size", sqlite_where=text("size >= 67108864"),
              postgresql_where=text("size >= 67108864")),
    )
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Set for a blob stored inside a pack file (small blobs uploaded in a batch): the
    # pack's name and the blob's offset in it. NULL: the blob is a file (object) of its own.
    pack: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    pack_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SpaceBlob(Base):
    """A blob whose content was proven in a space: uploaded with a build of the space
    as its target (the hub hashed the bytes), or named by a build of the space. A
    manifest may name only such blobs, and "you already have it" is said only of
    them, so knowing a digest is not enough to reach content stored for another space.
    Kept when the blob itself is collected: the space has shown it knows the bytes."""

    __tablename__ = "space_blobs"
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)


class Build(Base):
    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("space_id", "type", "build_id", name="uq_builds_space_type_build"),
        UniqueConstraint("space_id", "path", name="uq_builds_space_path"),
        Index("ix_builds_space_manifest", "space_id", "manifest"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    build_id: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(1024))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # sha256 of the manifest (publish.core.manifest_digest); None for builds from before 0009
    manifest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The build whose build_files rows this build uses (the same manifest); None: its own rows.
    files_of: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)

    @property
    def entries(self) -> int:
        """The id that this build's build_files rows are stored under."""
        return self.files_of or self.id


class BuildFile(Base):
    __tablename__ = "build_files"
    build: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    # not indexed (migration 0011): gc finds unreferenced blobs with one pass over the table
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[int] = mapped_column(Integer, default=0o644)


class Latest(Base):
    __tablename__ = "latest"
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    build: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))


class Upload(Base):
    """A resumable upload of one large blob: ``received`` bytes so far, in the pieces
    of :class:`UploadPiece` (files or objects in the shared blob store), so any hub
    replica continues it. ``finishing_at``: a replica is storing it as its blob."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: declared at the end
    size: Mapped[int] = mapped_column(BigInteger)
    user: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    space: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    finishing_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UploadPiece(Base):
    """Bytes ``start .. start+size`` of an upload, stored as ``uploads/<upload_id>/<name>``."""

    __tablename__ = "upload_pieces"
    upload_id: Mapped[str] = mapped_column(String(32), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(32))


class UploadLease(Base):
    """One upload in progress (of any kind), held by the replica serving it and renewed
    while it runs (``hub/limits.py``): the caps on uploads per token and per user count
    these rows, so they hold across replicas; a dead replica's leases lapse at ``expires_at``."""

    __tablename__ = "upload_leases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthFailure(Base):
    """Failed authentications from one source in one minute (seconds since the epoch // 60,
    on the database's clock): what the failure limiter counts on PostgreSQL, so that
    replicas share one budget per source (``auth/failures.py``). Empty on SQLite."""

    __tablename__ = "auth_failures"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    failures: Mapped[int] = mapped_column(Integer)


# ---------------------------------------------------------------- log sync


class LogRecord(Base):
    """One immutable log record in a space. ``id`` is the record's UUIDv7 as 16 bytes
    (as in the local store), so byte order is time order and range scans use the key."""

    __tablename__ = "log_records"
    # Loading a space's ids and content tags for reconciliation is an index-only scan.
    __table_args__ = (Index("ix_log_records_tags", "space_id", "id", "digest"),)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    created: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)
    pushed_by: Mapped[str] = mapped_column(String(64))
    pushed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # tether.log.store.record_digest of the record: its content tag in reconciliation.
    digest: Mapped[bytes | None] = mapped_column(LargeBinary(8), nullable=True)


class LogHead(Base):
    """One per space that holds log records. ``version`` is a new random value on
    every push that stores something (the pusher holds this row locked meanwhile),
    so a hub can tell in one lookup whether its cached ids of the space are current."""

    __tablename__ = "log_heads"
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    records: Mapped[int] = mapped_column(BigInteger)


class ForwardRoute(Base):
    """A user's forwarded app (``NAME--USER.<gateway domain>``): one row per user and name,
    live while a node's SSH connection holds it. ``holder`` names the hub replica that
    holds that connection (its gateway's internal address); ``token_id`` is the route's
    own token, parent of its sign-in links and sessions, revoked when the route ends."""

    __tablename__ = "forward_routes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16), default="live")  # live | closed
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    idle_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_down: Mapped[int] = mapped_column(BigInteger, default=0)
    open_connections: Mapped[int] = mapped_column(Integer, default=0)  # as its holder last saw them

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_forward_routes_user_name"),)


class ForwardShare(Base):
    """The route's owner lets another user through the gateway to it."""

    __tablename__ = "forward_shares"
    route_id: Mapped[int] = mapped_column(ForeignKey("forward_routes.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---------------------------------------------------------------- jobs (rendezvous)


class JobGroup(Base):
    """A multi-node job: its nodes, messages and barriers hang off it (see tether.job)."""

    __tablename__ = "job_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # job: scopes name it, so unique hub-wide
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lost_after: Mapped[float | None] = mapped_column(nullable=True)  # seconds
    essential: Mapped[list] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str] = mapped_column(String(500), default="")


class JobNode(Base):
    __tablename__ = "job_nodes"
    group_id: Mapped[int] = mapped_column(ForeignKey("job_groups.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(128))
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(String(500), default="")
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waiting_on: Mapped[str] = mapped_column(String(300), default="")  # for `tether job status`


class JobMessage(Base):
    __tablename__ = "job_messages"
    group_id: Mapped[int] = mapped_column(ForeignKey("job_groups.id", ondelete="CASCADE"), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[dict] = mapped_column(JSON)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobSync(Base):
    """How many generations of barrier ``sync_id`` a node has reached."""

    __tablename__ = "job_syncs"
    group_id: Mapped[int] = mapped_column(ForeignKey("job_groups.id", ondelete="CASCADE"), primary_key=True)
    sync_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    reached: Mapped[int] = mapped_column(Integer)
    told: Mapped[int] = mapped_column(Integer, default=0)  # the last generation it was answered "done"
    call: Mapped[str] = mapped_column(String(64), default="")  # the token of its last arriving call
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---------------------------------------------------------------- apps (sandboxed, per user)


class App(Base):
    """A registered web app of a space; users spawn instances of its current version."""

    __tablename__ = "apps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)  # the gateway's APP--USER: unique hub-wide
    current_version: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppVersion(Base):
    """One version of an app: its files (a build in the blob store, by manifest digest),
    its argv lists (never shell strings), limits and the grants every instance starts with."""

    __tablename__ = "app_versions"
    __table_args__ = (UniqueConstraint("app_id", "version", name="uq_app_versions_app_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"), nullable=True)
    build_ref: Mapped[str] = mapped_column(String(400))  # SPACE/TYPE/ID, as registered
    manifest: Mapped[str] = mapped_column(String(64))  # the files' identity: same tree, same digest
    argv: Mapped[list] = mapped_column(JSON)
    install_argv: Mapped[list | None] = mapped_column(JSON, nullable=True)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    cpu: Mapped[float] = mapped_column()
    pids: Mapped[int] = mapped_column(Integer)
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # /data's size (None: registered before 0019, 1 GiB)
    grants: Mapped[list] = mapped_column(JSON, default=list)  # ["tcp:ADDR:PORT", ...] for every instance
    # the app listens on 127.0.0.1:tcp_port in its own netns (a relay serves $TETHER_SOCKET); None: on the socket
    tcp_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppInstance(Base):
    """One user's instance of an app. ``holder`` names the hub replica running its sandbox
    (its gateway's internal address and run id); ``desired`` is what the user asked for,
    ``state`` what the holder last saw; the holder reconciles the two."""

    __tablename__ = "app_instances"
    # ids name sandboxes (core.instance_id) and are never handed out twice: AUTOINCREMENT
    # on SQLite (migration 0022); PostgreSQL's sequence never reuses a number
    __table_args__ = (UniqueConstraint("app_id", "user_id", name="uq_app_instances_app_user"),
                      {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("app_versions.id", ondelete="RESTRICT"))
    uid: Mapped[int] = mapped_column(Integer, unique=True)
    state: Mapped[str] = mapped_column(String(16))  # starting | running | idle | stopped | failed
    desired: Mapped[str] = mapped_column(String(16))  # running | stopped | idle | removed
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # the replica (gateway address) whose apps_root holds its /data; others run it only if they share that apps_root
    data_at: Mapped[str | None] = mapped_column(String(128), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # parent of sign-in links, sessions
    reason: Mapped[str] = mapped_column(String(500), default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)  # crashes in a row (backoff)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[dict] = mapped_column(JSON, default=dict)  # refused attempts by kind, as the sandbox counts
    oom_kills: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_down: Mapped[int] = mapped_column(BigInteger, default=0)


class AppShare(Base):
    """An instance's owner lets another user through the gateway to it (read-only: GET
    and HEAD only). Checked on every request, so removing it shuts the door at once."""

    __tablename__ = "app_shares"
    instance_id: Mapped[int] = mapped_column(ForeignKey("app_instances.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppGrant(Base):
    """One destination an instance may reach (default deny: nothing else). Re-applied
    whenever its sandbox starts or is adopted; gone at ``expires_at``."""

    __tablename__ = "app_grants"
    __table_args__ = (UniqueConstraint("instance_id", "proto", "address", "port", name="uq_app_grants_dest"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("app_instances.id", ondelete="CASCADE"), index=True)
    proto: Mapped[str] = mapped_column(String(3))
    address: Mapped[str] = mapped_column(String(64))
    port: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(253))  # as asked for (a name or the address)
    on_hub: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
