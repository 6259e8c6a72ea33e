"""Browser sessions for downloads: ``/login`` turns a token into a session cookie.

A browser cannot send ``Authorization: Bearer``, so a person browsing private builds
signs in once with a token (pasted into a form). The hub mints a child of that token
(the same narrowing rules, lifetime at most :data:`SESSION_HOURS` and never past its
parent's, revoked with it) and sets its secret as an ``HttpOnly`` cookie. The cookie is
honoured only for reading (GET and HEAD of ``/files/…`` and of the front page ``/``, which
lists what it may read): it can change nothing, so a forged cross-site request gains nothing. ``/logout`` revokes the session's token.
"""

from __future__ import annotations

import html
from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.auth import service
from tether.auth.deps import authenticate_secret
from tether.auth.service import AuthContext, MintRequest
from tether.db.models import utcnow
from tether.problems import Problem

COOKIE = "tether_session"
# Over HTTPS the cookie is "__Host-" prefixed: a browser keeps it only if it is Secure, has
# Path=/ and no Domain, so no other host (a sibling subdomain) can set or shadow it.
SECURE_COOKIE = "__Host-" + COOKIE
SESSION_HOURS = 12
MAX_FORM_BYTES = 4096

router = APIRouter(include_in_schema=False)

_PAGE_HEADERS = {
    # no script, no outside resource, forms post only here, no other site frames it
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def session_caller(request: Request) -> AuthContext | None:
    """The caller of a download that sent no Authorization header: its session cookie's
    token, if it sent one. A session that has ended (expired, revoked) leaves the browser
    anonymous, not locked out: public builds still download, private ones ask to sign
    in again; it is not counted as a failed authentication (a browser resends it with
    every request)."""
    secret = request.cookies.get(cookie_name(request))
    if not secret:
        return None
    try:
        return authenticate_secret(request, secret, count_failure=False)
    except Problem as p:
        if p.status == 401:
            request.state.session_ended = True  # said on the sign-in page
            return None
        raise


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if request.url.scheme == "https" else COOKIE


def _next(value: str | None) -> str:
    """Where to go after signing in: a path under /files/ on this hub, nothing else."""
    if value and value.startswith("/files/") and "//" not in value and "\\" not in value:
        return value
    return "/files/"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
           f"<body style='font-family:sans-serif;max-width:40em;margin:2em auto'><h1>{html.escape(title)}</h1>"
           f"{body}</body></html>")
    return HTMLResponse(doc, status_code=status, headers=_PAGE_HEADERS)


def _form(next_path: str, error: str = "", status: int = 200) -> HTMLResponse:
    said = f"<p style='color:#a00'>{html.escape(error)}</p>" if error else ""
    return page("Sign in to read private builds", (
        f"{said}<form method='post' action='/login'>"
        f"<input type='hidden' name='next' value='{html.escape(next_path, quote=True)}'>"
        "<p><label>Token <input name='token' type='password' size='60' autocomplete='off' autofocus></label></p>"
        "<p><button type='submit'>Sign in</button></p></form>"
        f"<p>Use a token with read access to the space, e.g. from <code>tether token mint --scope "
        f"publish:SPACE:read --expires 8h</code>. The hub keeps a session of at most {SESSION_HOURS} hours "
        "for this browser, derived from that token; the token itself is not stored.</p>"), status)


@router.get("/login")
def login_form(request: Request, next: str | None = None):  # noqa: A002 - the query parameter's name
    return _form(_next(next))


def _same_origin(request: Request) -> bool:
    """A browser says where a form came from: only this hub's own page may sign it in
    (else a page elsewhere could sign a visitor in as someone else)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser (curl), or an old one
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _cross_site(request: Request) -> Response:
    """403 for a form posted from another site: a page for a browser, a problem for the rest."""
    problem = Problem(403, "cross-site-sign-in", "sign in and out from this hub's own pages (/login, /logout)")
    if "text/html" not in request.headers.get("accept", ""):
        raise problem
    request.state.problem = problem  # for the audit trail
    return page("Not here", f"<p>{html.escape(problem.detail)}.</p>", 403)


@router.post("/login")
async def login(request: Request):
    if not _same_origin(request):
        return _cross_site(request)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Problem(413, "request-too-large", f"the sign-in form is limited to {MAX_FORM_BYTES} bytes")
    try:
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:  # more fields than the form has
        return _form("/files/", "That was not the sign-in form of this hub.", 400)
    token = (form.get("token") or [""])[0].strip()
    next_path = _next((form.get("next") or [""])[0])
    if not token:
        return _form(next_path, "Paste a token.", 400)
    try:
        ctx = await run_in_threadpool(authenticate_secret, request, token)
        row, secret = await run_in_threadpool(_mint_session, request, ctx)
    except Problem as p:
        if p.status == 429:
            raise
        return _form(next_path, f"Not signed in: {p.detail}", p.status)
    ctx.trail["resource"] = f"token:{row.id}"
    seconds = max(int((row.expires_at - utcnow()).total_seconds()), 1)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(cookie_name(request), secret, max_age=seconds, httponly=True, samesite="lax", path="/",
                        secure=request.url.scheme == "https")
    return response


def _mint_session(request: Request, ctx: AuthContext):
    hub = request.app.state.hub
    now = utcnow()
    until = now + timedelta(hours=SESSION_HOURS)
    if ctx.token is not None and ctx.token.expires_at is not None:
        until = min(until, ctx.token.expires_at)  # a child never outlives its parent
    return service.mint(hub.db, ctx, MintRequest(expires=until.isoformat(), label="browser session"), now=now,
                        max_lifetime=hub.max_lifetime, default_lifetime=hub.default_lifetime)


@router.get("/logout")
def logout_form(request: Request):
    """A button: signing out is a POST (a link followed by a crawler must not do it)."""
    return page("Sign out", "<form method='post' action='/logout'><button type='submit'>Sign out</button></form>")


@router.post("/logout")
def logout(request: Request):
    if not _same_origin(request):
        return _cross_site(request)
    secret = request.cookies.get(cookie_name(request))
    said = "<p>This browser had no session.</p>"
    if secret:
        said = "<p>This browser's session had already ended.</p>"
        try:
            ctx = authenticate_secret(request, secret, count_failure=False)
            if ctx.token is not None:
                service.revoke(request.app.state.hub.db, ctx, ctx.token.id, now=utcnow())
                said = "<p>Signed out: the session's token is revoked.</p>"
        except Problem:
            pass  # expired or revoked already: the cookie goes either way
    response = page("Signed out", f"{said}<p><a href='/login'>Sign in again</a>.</p>")
    response.delete_cookie(cookie_name(request), path="/", secure=request.url.scheme == "https", httponly=True,
                           samesite="lax")
    return response


def sign_in_page(request: Request, problem: Problem) -> Response | None:
    """A browser refused a private download: the sign-in form instead of JSON, with the
    path to come back to (401: no session, or it ended; 403: this session may not read
    it, so sign in with another token)."""
    if problem.status not in (401, 403) or "text/html" not in request.headers.get("accept", ""):
        return None
    if problem.status == 403:
        said = f"Your session may not read this: {problem.detail}. Sign in with a token that may."
    elif getattr(request.state, "session_ended", False):
        said = "Your session has ended (expired, signed out or revoked). Sign in again."
    else:
        said = "This build is private. Sign in with a token that may read it."
    return _form(_next(request.url.path), said, problem.status)


__all__ = ["COOKIE", "page", "router", "session_caller", "sign_in_page"]
