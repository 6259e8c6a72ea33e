"""A thin client for the hub's JSON API, and the lazy connection a command uses.

    >>> with Hub("https://hub.example", token="tth_...") as hub:
    ...     me = hub.get("/api/v1/whoami")

Non-2xx answers raise :class:`~tether.hubclient.errors.HubError` carrying the
``application/problem+json`` body; failures to talk to the hub at all raise
:class:`~tether.hubclient.errors.TransportError`. Retries follow :data:`POLICY`.
Kept free of click: ``tether publish`` runs without it.
"""

from __future__ import annotations

from tether.hubclient.retry import RetryPolicy

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)

# The transport (http.client, ssl, json) and the errors are imported once a Hub is
# made: `tether --help` and a command's argument errors never need them.
if TYPE_CHECKING:
    from typing import Any

    from tether.hubclient.config import ClientConfig
    from tether.hubclient.transport import Handler, WireResponse

#: Connection failures and 502/503/504, for idempotent methods only, three tries in all.
POLICY = RetryPolicy()


class Hub:
    """Talk to a hub. ``ca_bundle`` is a PEM file trusted instead of the system CAs;
    ``handler`` answers instead of the network (tests, see :class:`WireClient`)."""

    def __init__(
        self,
        hub_url: str,
        token: str | None = None,
        ca_bundle: str | None = None,
        timeout: float = 30,
        *,
        policy: RetryPolicy = POLICY,
        handler: Handler | None = None,
    ):
        from tether import __version__
        from tether.hubclient.transport import WireClient, tls_context
        from tether.problems import ConfigError

        self.hub_url = hub_url.rstrip("/")
        self.token = token
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.policy = policy
        self.ssl_context = tls_context(self.hub_url, ca_bundle)
        headers = {"User-Agent": f"tether/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # (publish.client tells a Hub from a ClientConfig by its _http)
            self._http = WireClient(self.hub_url, headers=headers, timeout=timeout, verify=self.ssl_context,
                                    handler=handler)
        except ValueError as exc:  # a hub or proxy URL it cannot use
            raise ConfigError(f"bad hub URL: {exc}", hint="check --hub / TETHER_HUB and the http(s)_proxy variables") from None

    def __repr__(self) -> str:
        return f"Hub({self.hub_url!r}, token={'<set>' if self.token else None})"

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests -----------------------------------------------------------

    def send(self, method: str, path: str, **kw: Any) -> WireResponse:
        """Send one request (retried per the policy) and return the answer, whatever its status."""
        from tether.hubclient.errors import TransportError
        from tether.hubclient.transport import WireError, WireTimeout

        method = method.upper()

        def once() -> WireResponse:
            try:
                return self._http.request(method, path, **kw)
            except WireTimeout:  # not tried again: the hub may be at work on it, and a second wait helps no one
                raise TransportError(f"timed out talking to {self.hub_url} (no answer within {self.timeout:g} s)",
                                     url=self.hub_url + path) from None

        try:
            return self.policy.call(method, once, status=lambda r: r.status_code, transient=WireError)
        except WireError as exc:
            raise TransportError(f"cannot reach hub at {self.hub_url}: {exc}", url=self.hub_url + path,
                                 tls="[SSL" in str(exc)) from None

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        """Send one request; return the decoded JSON body (None when empty)."""
        from tether.hubclient.errors import HubError, problem_from

        resp = self.send(method, path, **kw)
        if not resp.is_success:
            raise HubError(resp.status_code, problem_from(resp), retry_after=self.policy.retry_after(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise HubError(502, {"type": "about:blank", "title": "Bad response", "status": 502,
                                 "detail": f"the hub sent a non-JSON {resp.status_code} answer"}) from None

    def get(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("DELETE", path, **kw)


class Conn:
    """The hub connection a command uses; resolves config and connects lazily.

    Nothing is cached between invocations: each command run reads flags,
    environment and config file afresh.
    """

    def __init__(self, hub: str | None, token: str | None, ca_bundle: str | None, timeout: float = 30):
        self._flags = (hub, token, ca_bundle)
        self.timeout = timeout
        self._config: ClientConfig | None = None
        self._client: Hub | None = None

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            from tether.hubclient.config import resolve

            self._config = resolve(*self._flags)
        return self._config

    @property
    def config_or_none(self) -> ClientConfig | None:
        return self._config

    @property
    def token_secret(self) -> str | None:
        if self._config is not None:
            return self._config.token
        return self._flags[1]

    @property
    def client(self) -> Hub:
        if self._client is None:
            cfg = self.config
            self._client = Hub(cfg.require_hub(), token=cfg.token, ca_bundle=cfg.ca_bundle, timeout=self.timeout)
        return self._client

    def explain(self, exc: BaseException) -> BaseException:
        """``exc`` with the hint this connection can give: a 401 when no token was sent."""
        from tether.hubclient.errors import HubError

        if isinstance(exc, HubError) and exc.status == 401 and not self.token_secret:
            hint = "no token was sent: pass --token, set TETHER_TOKEN or run `tether login HUB_URL`"
            skipped = self._config.file_hub_skipped if self._config is not None else None
            if skipped:
                hint += f" (the saved token is for {skipped})"
            exc.hint = hint
        return exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None



def q(segment: str) -> str:
    """Quote one URL path segment (names may hold any character)."""
    from urllib.parse import quote

    return quote(segment, safe="")


__all__ = ["POLICY", "Conn", "Hub", "q"]
