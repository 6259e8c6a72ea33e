"""Where a tether client finds its hub, its token and its TLS trust root.

Resolution order, per setting: command-line flag, then environment
(``TETHER_HUB``, ``TETHER_TOKEN``, ``TETHER_CA_BUNDLE``), then the config file
``$XDG_CONFIG_HOME/tether/config.toml`` (``~/.config/tether/config.toml`` when
``XDG_CONFIG_HOME`` is unset or not absolute).

The file's ``token`` and ``ca_bundle`` belong to the file's ``hub``: when the hub
comes from a flag or the environment and names a *different* hub, the saved
token is not used, so a stray ``TETHER_HUB`` never carries a token to a host it
was not minted for.

The file holds a secret, so it is written 0600 in a 0700 directory, through a
temporary file in the same directory and an atomic rename: a reader sees the
old file or the new one, never half of one.

Nothing here touches the network or caches anything between calls; every
function reads the environment it is given (``os.environ`` by default).
"""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path
from urllib.parse import urlsplit

from tether.problems import ConfigError

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# tomllib, ipaddress and tether.files are imported where they are used: every
# hub command resolves its config, mostly without a file to parse.

ENV_HUB = "TETHER_HUB"
ENV_TOKEN = "TETHER_TOKEN"
ENV_CA_BUNDLE = "TETHER_CA_BUNDLE"

FILE_KEYS = ("hub", "token", "ca_bundle", "user")  # user: whom the token acts for, as the hub said at login


NO_HUB = ConfigError(
    "no hub configured: run `tether login HUB_URL --token T` or set TETHER_HUB"
)


_FIELDS = ["hub", "token", "ca_bundle", "hub_source", "token_source", "path", "file_hub_skipped"]


class ClientConfig(namedtuple("ClientConfig", _FIELDS, defaults=[None] * (len(_FIELDS) - 1))):
    """The resolved settings; ``*_source`` is "flag", "env", "file" or None.
    (A named tuple: dataclasses imports inspect, and typing.NamedTuple typing, ~5 ms of
    every command between them.)"""

    __slots__ = ()
    hub: str | None
    token: str | None
    ca_bundle: str | None
    hub_source: str | None
    token_source: str | None
    path: Path | None
    #: set when the file holds a token that was *not* used because the hub differs
    file_hub_skipped: str | None

    def __repr__(self) -> str:  # never show the secret
        tok = "set" if self.token else "None"
        return (
            f"ClientConfig(hub={self.hub!r}, token=<{tok}>, ca_bundle={self.ca_bundle!r}, "
            f"hub_source={self.hub_source!r}, token_source={self.token_source!r})"
        )

    def require_hub(self) -> str:
        if not self.hub:
            raise ConfigError(str(NO_HUB))
        return self.hub


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The client config file path, honouring ``XDG_CONFIG_HOME``."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    else:
        home = env.get("HOME") or str(Path.home())
        base = Path(home) / ".config"
    return base / "tether" / "config.toml"


def normalize_hub(url: str) -> str:
    """Canonical form of a hub URL: scheme added (https) if missing, no trailing slash.

    Raises ConfigError for anything that is not an http(s) URL with a host.
    """
    url = url.strip()
    if not url:
        raise ConfigError("empty hub URL")
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"hub URL must be http:// or https://, not {parts.scheme}://")
    if not parts.hostname:
        raise ConfigError(f"hub URL has no host: {url}")
    if parts.username or parts.password:
        raise ConfigError("hub URL must not carry credentials; pass the token with --token")
    if parts.query or parts.fragment:
        raise ConfigError(f"hub URL must not have a query or fragment: {url}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigError(f"bad port in hub URL: {url}") from exc
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def is_loopback_url(url: str) -> bool:
    """True if the URL's host is localhost or a loopback address."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_file(path: Path) -> dict[str, Any]:
    """Read a config file; a missing file is an empty config."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    import tomllib  # only when there is a file to parse

    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}", hint="fix or remove the file, then run `tether login`") from exc
    for key in FILE_KEYS:
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: `{key}` must be a string")
    return data


def _same_hub(a: str, b: str) -> bool:
    try:
        return normalize_hub(a) == normalize_hub(b)
    except ConfigError:
        return False


def resolve(
    hub: str | None = None,
    token: str | None = None,
    ca_bundle: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> ClientConfig:
    """Resolve hub, token and CA bundle: flag values > env > config file."""
    env = os.environ if env is None else env
    path = config_path(env) if path is None else path

    def pick(flag: str | None, env_name: str) -> tuple[str | None, str | None]:
        if flag:
            return flag, "flag"
        if env.get(env_name):
            return env[env_name], "env"
        return None, None

    hub_v, hub_src = pick(hub, ENV_HUB)
    tok_v, tok_src = pick(token, ENV_TOKEN)
    ca_v, _ = pick(ca_bundle, ENV_CA_BUNDLE)

    # Read the file only when something is still missing.
    file_cfg: dict[str, Any] = {}
    if hub_v is None or tok_v is None or ca_v is None:
        file_cfg = load_file(path)
    file_hub = file_cfg.get("hub") or None

    skipped = None
    if hub_v is None and file_hub:
        hub_v, hub_src = file_hub, "file"
    file_applies = bool(file_hub) and (hub_src == "file" or (hub_v is not None and _same_hub(hub_v, file_hub)))
    if file_applies:
        if tok_v is None and file_cfg.get("token"):
            tok_v, tok_src = file_cfg["token"], "file"
        if ca_v is None and file_cfg.get("ca_bundle"):
            ca_v = file_cfg["ca_bundle"]
    elif file_hub and file_cfg.get("token") and tok_v is None:
        skipped = file_hub

    if hub_v is not None:
        hub_v = normalize_hub(hub_v)
    return ClientConfig(
        hub=hub_v,
        token=tok_v.strip() if tok_v else None,
        ca_bundle=ca_v,
        hub_source=hub_src,
        token_source=tok_src,
        path=path,
        file_hub_skipped=skipped,
    )


def saved_user(env: Mapping[str, str] | None = None) -> str | None:
    """The hub user ``tether login`` saved (whom its token acts for), if any."""
    return load_file(config_path(env)).get("user") or None


def save(
    hub: str,
    token: str,
    ca_bundle: str | None = None,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Path:
    """Write hub, token (and CA bundle, and the user the token acts for) to the config
    file, atomically, 0600.

    Other keys already in the file are kept; ``ca_bundle`` and ``user`` are removed
    when not given, since they belong to the hub and token they were saved with.
    """
    import tomli_w

    from tether.files import write_private

    path = config_path(env) if path is None else path
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask

    try:
        data = load_file(path)
    except ConfigError:
        data = {}  # an unreadable old file is replaced, not merged
    data["hub"] = normalize_hub(hub)
    data["token"] = token
    if ca_bundle:
        data["ca_bundle"] = str(Path(ca_bundle).expanduser().resolve())
    else:
        data.pop("ca_bundle", None)
    if user:
        data["user"] = user
    else:
        data.pop("user", None)
    payload = tomli_w.dumps(data).encode()

    write_private(path, payload)
    return path
