"""The hub's front page, ``/`` (and ``/files/``, where signing in lands): what the caller
may read. Signed in (a browser's session cookie, or a bearer token): each space with a
build it may read, that space's build types and newest builds, linked to their files.
Anonymous: how to sign in. ``?format=json`` (or ``Accept: application/json``) gives the
same list as JSON. The page is the sign-in pages' kind: no script, nothing from
elsewhere, not framed by other sites (:data:`tether.auth.sessions.page`'s headers)."""

from __future__ import annotations

import html
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.auth.service import AuthContext, iso
from tether.auth.sessions import page
from tether.publish.api import optional_caller

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/files/", methods=["GET", "HEAD"])
async def home(request: Request, ctx: Annotated[AuthContext | None, Depends(optional_caller)]):
    wants_json = request.query_params.get("format") == "json" or "application/json" in request.headers.get("accept", "")
    if ctx is None:
        if wants_json:
            return JSONResponse({"user": None, "spaces": [], "sign_in": "/login"})
        return _anonymous(getattr(request.state, "session_ended", False))
    spaces = await run_in_threadpool(request.app.state.publisher.overview, ctx)
    if wants_json:
        return JSONResponse({"user": ctx.user.name, "spaces": spaces})
    return page("tether hub", _whom(ctx) + "".join(_space(s) for s in spaces) + _nothing(spaces))


def _anonymous(ended: bool) -> HTMLResponse:
    said = "<p>Your session has ended (expired, signed out or revoked).</p>" if ended else ""
    return page("tether hub", (
        f"{said}<p>Not signed in. <a href='/login?next=/files/'>Sign in</a> with a token that may read "
        "builds to see the spaces, build types and builds it may read, and download them.</p>"
        "<p>No token? Ask the hub's operator for one, e.g. <code>tether token mint --for YOU --scope "
        "publish:SPACE:read --expires 8h</code>. The browser keeps a session derived from it "
        "(at most 12 hours); the token itself is not stored.</p>"
        "<p>Public builds need no sign-in: <code>/files/SPACE/</code>.</p>"))


def _whom(ctx: AuthContext) -> str:
    tok = ctx.token
    until = f" until {iso(tok.expires_at)}" if tok is not None and tok.expires_at is not None else ""
    return (f"<p>Signed in as <b>{html.escape(ctx.user.name)}</b>{html.escape(until)} · "
            "<a href='/logout'>sign out</a> · <a href='/login?next=/files/'>sign in with another token</a></p>")


def _href(space: str, path: str = "") -> str:
    return html.escape("/files/" + quote(space) + "/" + (quote(path) + "/" if path else ""), quote=True)


def _space(s: dict) -> str:
    name = s["space"]
    types = " ".join(f"<a href='{_href(name, t)}'>{html.escape(t)}/</a>" for t in s["types"])
    rows = "".join(
        f"<tr><td><a href='{_href(name, b['path'])}'>{html.escape(b['build'])}</a></td>"
        f"<td>{html.escape(b['type'])}</td><td align='right'>{b['files']:,}</td>"
        f"<td align='right'>{b['bytes']:,}</td><td>{html.escape(b['created_at'] or '')}</td>"
        f"<td>{html.escape(b['user'])}</td></tr>" for b in s["recent"])
    desc = f"<p>{html.escape(s['description'])}</p>" if s["description"] else ""
    if not s["recent"]:
        return f"<section class='space'><h2>{html.escape(name)}</h2>{desc}<p>No builds yet.</p></section>"
    return (f"<section class='space'><h2><a href='{_href(name)}'>{html.escape(name)}</a></h2>{desc}"
            f"<p>Build types: {types}</p><table><tr><th align='left'>build</th><th align='left'>type</th>"
            "<th>files</th><th>bytes</th><th align='left'>published</th><th align='left'>by</th></tr>"
            f"{rows}</table></section>")


def _nothing(spaces: list[dict]) -> str:
    if spaces:
        return ""
    return ("<p>This token may read no builds yet: its user has no read grant on a space holding builds, "
            "or its scopes cover none. Sign in with another token, or ask a space's admin for a grant.</p>")


__all__ = ["router"]
