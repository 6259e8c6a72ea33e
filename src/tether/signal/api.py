"""HTTP route for signal: where the hub's NATS is, and credentials for it.

``POST /api/v1/signal/nats`` (any signed-in user, not a scoped token) answers
``{"servers": [...], "creds": TEXT | null, "expires": UNIX | null}``: the
embedded nats-server's URL and a fresh ``.creds`` for a NATS user named after
the caller, or a cluster's URLs (``creds`` null: bring your own). 404 when the
hub runs no NATS for signal (``signal_nats = "off"``). 409 while another replica
of this hub (the same database) runs an embedded NATS of its own: the two would
hand out servers that never reach each other.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tether.auth.deps import Caller
from tether.problems import Problem

router = APIRouter(prefix="/api/v1/signal", tags=["signal"])


@router.post("/nats")
async def nats_credentials(ctx: Caller, request: Request) -> dict:
    ctx.require("signal.connect")
    provider = getattr(request.app.state, "signal_nats", None)
    if provider is None:
        raise Problem(404, "not-found", "this hub runs no NATS server for signal (signal_nats = \"off\", or the hub "
                                        "was started without one): use a config file with your own `server:` lines")
    import anyio

    from tether.units import parse_duration

    others = await anyio.to_thread.run_sync(provider.other_replicas)
    if others:
        raise Problem(409, "signal-nats-per-replica",
                      f"{others + 1} replicas of this hub (one database) each run their own embedded NATS server, and "
                      "nodes given credentials by different replicas would never reach each other: set signal_nats "
                      "to your NATS cluster's URLs on every replica (docs/signal.md, 'Several hub replicas')")

    lifetime = int(parse_duration(request.app.state.hub.settings.signal_creds_lifetime).total_seconds())
    creds, expires = provider.issue(ctx.principal.user, lifetime)
    return {"servers": list(provider.servers), "creds": creds, "expires": expires}
