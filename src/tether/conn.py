"""The hub connection a command uses (kept free of click: `tether publish` runs without it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.client import HubClient
    from tether.clientconfig import ClientConfig


class Conn:
    """The hub connection a command uses; resolves config and connects lazily.

    Nothing is cached between invocations: each command run reads flags,
    environment and config file afresh.
    """

    def __init__(self, hub: str | None, token: str | None, ca_bundle: str | None, timeout: float = 30):
        self._flags = (hub, token, ca_bundle)
        self.timeout = timeout
        self._config: ClientConfig | None = None
        self._client: HubClient | None = None

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            from tether.clientconfig import resolve

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
    def client(self) -> HubClient:
        if self._client is None:
            from tether.client import HubClient

            cfg = self.config
            self._client = HubClient(cfg.require_hub(), token=cfg.token, ca_bundle=cfg.ca_bundle, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
