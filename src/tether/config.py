"""Hub settings: embedded defaults, a TOML file, then ``TETHER_*`` environment overrides.

Precedence (highest first): explicit command-line values, ``TETHER_*`` environment
variables, the TOML file (``--config`` or ``/etc/tether/hub.toml``), defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tether.problems import ConfigError  # re-exported: what loading the hub's settings raises

DEFAULT_CONFIG = Path("/etc/tether/hub.toml")

class PublishType(BaseModel):
    """How one build type is published (``[hub.publish_types.android]``). Only the shape
    lives here: publishing checks its rules (:func:`tether.publish.settings.check`)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(default="{type}/{build_id}", description="where builds land in their space")
    overwrite: bool = Field(default=False, description="may a build id be published again (replacing it)")
    public: bool | None = Field(default=None, description="downloadable without a token (default: the space's setting)")
    keep_last: int | None = Field(default=None, ge=1, description="retention: keep only the newest N builds")
    keep_days: float | None = Field(default=None, gt=0, description="retention: keep builds younger than D days")


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="forbid")

    data_dir: Path = Field(default=Path("./data"), description="where the database, blobs and admin.token live")
    listen: str = Field(default="127.0.0.1:8580", description="HOST:PORT the API listens on")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in data_dir")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str | None = Field(
        default=None,
        description="the URL clients reach the hub at (e.g. https://hub.example.org), used in every URL the hub "
                    "answers with; when set, requests naming another Host get 421. Default: http(s)://LISTEN",
    )
    token_max_lifetime: str = Field(default="90d", description="no minted token may live longer")
    token_default_lifetime: str = Field(default="30d", description="lifetime of a minted token with no --expires")
    audit_retention_days: int = Field(default=90, ge=1)
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="largest JSON API request body")
    forwarded_allow_ips: str | None = Field(
        default=None, description="comma list of proxy addresses whose X-Forwarded-For is trusted"
    )
    auth_failures_per_minute: int = Field(default=60, ge=1, description="failed authentications per source before 429")
    # availability: what one client may hold of the hub (docs/hub.md, "Limits")
    body_idle_timeout: float = Field(
        default=30, gt=0, le=3600,
        description="seconds a request body may go without delivering body_min_rate bytes/s on average; then 408",
    )
    body_min_rate: int = Field(default=1024, ge=0, description="bytes/s a body must average over each body_idle_timeout")
    # a publish sends up to --jobs (8) + 2 uploads at once; a CI service user runs many jobs
    uploads_per_token: int = Field(default=16, ge=1, description="uploads one token may have in progress at once (429)")
    uploads_per_user: int = Field(default=64, ge=1, description="uploads one user may have in progress at once (429)")
    upload_lease_seconds: float = Field(
        default=60, ge=1, le=3600,
        description="seconds an upload's lease outlives a replica that stopped renewing it (a crash)")
    # A thread of the upload pool stores one piece of a body at a time, never waits for one
    upload_threads: int = Field(default=128, ge=1, description="threads storing upload bodies (their own pool)")
    max_header_bytes: int = Field(default=64 << 10, ge=4096, le=16 << 20,
                                  description="largest request line and headers of one request (431)")
    max_headers: int = Field(default=100, ge=16, le=10_000, description="most header fields in one request (431)")
    header_timeout: float = Field(
        default=10, gt=0, le=3600,
        description="seconds a request line and headers may take to arrive, API and gateway alike (408)")
    audit_anonymous_interval: float = Field(
        default=60, gt=0, le=86400,
        description="refusals of unauthenticated requests: one audit row per source and reason per this many seconds",
    )
    audit_read_interval: float = Field(
        default=60, gt=0, le=86400,
        description="reads by scoped tokens (downloads): one audit row per token and path per this many seconds",
    )
    log_level: str = "info"
    ssh_listen: str | None = Field(default=None, description="HOST:PORT for the hub's own SSH server (log sync, forward)")
    # the gateway (forwarded apps)
    gateway_listen: str | None = Field(default=None, description="HOST:PORT the gateway serves forwarded apps on")
    gateway_domain: str = Field(default="localhost", description="routes are NAME--USER.<domain>")
    gateway_public_port: int | None = Field(default=None, ge=1, le=65535,
                                            description="the port browsers use (default: the listen port)")
    gateway_tls_cert: Path | None = Field(default=None, description="PEM chain for *.<domain>: serve HTTPS")
    gateway_tls_key: Path | None = None
    gateway_path_mode: bool = Field(default=False, description="URLs as /apps/USER/NAME/ on one origin")
    gateway_internal: str | None = Field(default=None, description="this replica's gateway address for the others")
    gateway_answer_timeout: float = Field(
        default=300, gt=0, le=86400,
        description="seconds an app may send nothing after a whole request reached it (504); a body once begun "
                    "has no limit")
    forward_idle: str | None = Field(default=None, description="end routes with no traffic for this long (e.g. 2h)")
    forward_reconnect_grace: str = Field(default="60s", description="how long a route waits for its node to reconnect")
    forward_sweep_seconds: float = Field(default=5.0, ge=0.1, le=300,
                                         description="how often activity is saved and idle or orphaned routes end")
    # apps (sandboxed, per user; served by the gateway)
    apps_root: Path | None = Field(default=None, description="where instances' files, data and sockets live; "
                                   "default DATA/apps")
    apps_idle: str | None = Field(default=None, description="stop instances with no traffic for this long (e.g. 30m); "
                                  "the next request starts them again")
    apps_sweep_seconds: float = Field(default=2.0, ge=0.1, le=300,
                                      description="how often instances are checked: crashed, idle, stopped elsewhere")
    apps_uid_base: int = Field(default=1_500_000_000, ge=100_000, le=4_000_000_000,
                               description="first uid given to instances (each runs as a uid of its own)")
    apps_prefix: str = Field(default="tt", pattern=r"^[a-z][a-z0-9]{0,3}$",
                             description="1-4 characters starting the names of sandboxes' interfaces and cgroups")
    apps_uid_count: int = Field(default=1_000_000, ge=16, le=100_000_000, description="how many uids instances may use")
    # publishing
    blob_store: str | None = Field(default=None, description="blob directory, or s3://bucket/prefix; default DATA/blobs")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    publish_types: dict[str, PublishType] = Field(default_factory=dict)
    blob_lease_seconds: int = Field(default=3600, ge=60, description="how long an upload pins a blob; a 'you already have it' answer holds at least half of it")
    gc_grace: str = Field(default="1h", description="unreferenced blobs younger than this are kept")
    max_manifest_bytes: int = Field(default=64 << 20, ge=1024)
    max_blob_bytes: int = Field(default=1 << 40, ge=1, description="largest single file")
    # log sync
    log_allow_foreign_authors: bool = Field(
        default=False, description="let log writers push records authored by other users (log admins always may)"
    )
    log_cache_bytes: int = Field(
        default=256 << 20, ge=0,
        description="memory for cached record ids and tags of recently synced spaces (24 bytes per record; 0: no cache)",
    )
    log_sync_v3: bool = Field(
        default=True, description="answer log sync's protocol 3 (estimate, IBLT or list); off: ranges only, "
        "as hubs before it (clients fall back)",
    )

    # signal: the NATS server signal runs on (docs/signal.md)
    signal_nats: str = Field(
        default="embedded",
        description='"embedded": the hub runs a nats-server (JetStream, loopback, DATA/nats) and hands signed-in '
                    'users credentials for it; "off": none; or a comma list of nats:// URLs of a cluster of your own')
    signal_nats_listen: str = Field(default="127.0.0.1:0",
                                    description="HOST:PORT of the embedded nats-server (port 0: a free one)")
    signal_creds_lifetime: str = Field(default="30d", description="how long NATS credentials handed to a user last")

    # jobs (rendezvous)
    lava_listen: str | None = Field(
        default=None, description="HOST:PORT for the LAVA-coordinator-compatible listener (no authentication: "
        "bind it to the lab's private network only)")
    job_max_waits: int = Field(
        default=4096, ge=1, le=1_000_000,
        description="the most job long-polls (waits) one hub replica holds at once; past it a wait is answered "
                    "503 with Retry-After and `tether job` asks again")

    @field_validator("listen", "ssh_listen", "gateway_listen", "lava_listen", "signal_nats_listen")
    @classmethod
    def _check_listen(cls, v: str | None) -> str | None:
        if v is not None:
            split_listen(v)
        return v

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        try:
            u = urlsplit(v)
            u.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"public_url {v!r} is not a URL: {exc}") from None
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or u.username:
            raise ValueError(f"public_url {v!r} must be http(s)://HOST[:PORT][/PATH], with no query or user")
        return v.rstrip("/")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, v: str | None) -> str | None:
        # uvicorn takes anything it cannot parse as a name to compare literally: a typo in
        # an address would silently trust no one (or the wrong one); refuse it at start
        import ipaddress

        for item in (v or "").split(","):
            item = item.strip()
            if item and item != "*":
                try:
                    ipaddress.ip_network(item)  # as uvicorn reads it: 10.0.0.1/8 is no network
                except ValueError:
                    raise ValueError(f"forwarded_allow_ips: {item!r} is not an address or a network "
                                     "(e.g. 10.0.0.5, 10.0.0.0/24, ::1)") from None
        return v

    @field_validator("signal_nats")
    @classmethod
    def _check_signal_nats(cls, v: str) -> str:
        if v in ("embedded", "off"):
            return v
        for url in v.split(","):
            if not re.fullmatch(r"(nats|tls)://[^\s,/]+(:\d+)?", url.strip()):
                raise ValueError(f'signal_nats must be "embedded", "off" or nats:// URLs separated by commas, got {v!r}')
        return v

    @field_validator("gc_grace", "forward_idle", "forward_reconnect_grace", "signal_creds_lifetime", "apps_idle")
    @classmethod
    def _check_duration(cls, v: str | None, info) -> str | None:
        # refused when the hub starts, not with a 500 at the first gc or mint
        from tether.units import parse_duration

        if v is None:
            return v
        try:
            parse_duration(v)
        except ValueError as exc:
            name = info.field_name
            raise ValueError(f"{name} must be a positive duration like 30m, 1h or 7d: {name}: {exc}") from None
        return v

    def effective_blob_store(self) -> str:
        return self.blob_store or str((self.data_dir / "blobs").resolve())

    def effective_public_url(self) -> str:
        """The URL the hub's answers are built from: ``public_url``, else the listen
        address (https when the hub serves TLS). Never the request's Host header."""
        return self.public_url or f"{'https' if self.tls_cert else 'http'}://{self.listen}"

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tether.db').resolve()}"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not (0 <= int(port) <= 65535) or not host:
        raise ValueError(f"listen address {value!r} is not HOST:PORT (e.g. 127.0.0.1:8580 or [::1]:8580)")
    return host.strip("[]"), int(port)


def load_settings(config_file: Path | None = None, **overrides: Any) -> HubSettings:
    """Read the TOML file (if any), apply env vars, then explicit overrides."""
    file_values: dict[str, Any] = {}
    path = config_file or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        # Settings may sit at top level or under [hub], or both (a top-level key before a
        # [hub.publish_types.x] table is easy to write); the same key in both is refused.
        hub = raw.pop("hub", {})
        if not isinstance(hub, dict):
            raise ConfigError(f"config file {path}: 'hub' must be a table ([hub]), not a value")
        both = sorted(set(raw) & set(hub))
        if both:
            raise ConfigError(f"config file {path} sets {', '.join(both)} both at top level and under [hub]; "
                              "keep one")
        file_values = {**raw, **hub}
    env_keys = {name for name in HubSettings.model_fields if f"TETHER_{name.upper()}" in os.environ}
    values = {k: v for k, v in file_values.items() if k not in env_keys}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HubSettings(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid hub configuration: {_one_line(exc)}") from None


def _one_line(exc: ValidationError) -> str:
    """Each of pydantic's complaints as ``setting: why`` (a validator's own words when it
    raised), on one line: no input dump, no link to pydantic's pages."""
    parts = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(x) for x in e.get("loc", ()))
        why = str(e.get("ctx", {}).get("error") or e.get("msg"))
        parts.append(f"{where}: {why}" if where else why)
    return "; ".join(parts)
