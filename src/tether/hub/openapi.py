"""The API's description, true to what the hub answers, so a generated client or a
fuzzer can rely on it.

FastAPI describes each route from its signature: the parameters (with the patterns
of ``auth.params``), the bodies and the success answers. It knows nothing of what the
hub adds around the routes, so this module adds it once for all of them rather than
route by route: the errors every route may answer (problem+json, one ``Problem``
schema) and operation ids that stay distinct where one route serves two methods
(GET and HEAD of ``/files``). ``allowed_methods`` gives a 405 its true ``Allow``.
(The bearer security scheme comes from ``auth.deps.caller`` itself.)
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.routing import Match

from tether.problems import PROBLEM_BASE

PROBLEM_JSON = "application/problem+json"

# What the hub answers, on any route, before or instead of the route's own answer.
ERROR_STATUSES: dict[int, str] = {
    400: "bad input: the detail says what is wrong; nothing was changed",
    401: "no token, or one that is unknown, expired or revoked",
    403: "the token may not do this (its scopes, caveats or the user's grants)",
    404: "no such thing (or not one this token may know of)",
    409: "conflicts with what exists already; nothing was changed",
    413: "the request body is over the hub's limit",
    421: "the Host is not one of the hub's names (only when the hub has a public_url)",
    429: "too many failed authentications from this source, or a budget: retry after Retry-After",
    503: "the hub's storage is unavailable for now: retry after Retry-After",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details; `type` names it for programs, `detail` for people.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "pattern": "^" + re.escape(PROBLEM_BASE) + "[a-z0-9-]+$"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "description": "422 only: each field that is not valid, and the rule it breaks",
            "type": "array",
            "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {"type": "string"}}, "msg": {"type": "string"},
                "type": {"type": "string"}}},
        },
    },
    "additionalProperties": True,  # some problems say more (e.g. the missing blobs, the caveat refused)
}

_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


DOCS = "/api/v1/docs"
DOCS_ASSETS = DOCS + "/assets"


def install(app: FastAPI) -> None:
    """Serve the completed description at the app's ``openapi_url``, and the Swagger page
    at ``/api/v1/docs`` with its scripts from the hub itself: a hub without internet (or
    a browser that should not fetch code from elsewhere for it) still shows the page."""
    import swagger_ui_bundle

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="swagger-ui")

    @app.get(DOCS, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # the duplicate ids it warns of are made distinct below
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                app.openapi_schema = complete(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, not the hub's
        schemas.pop(unused, None)
    ids: dict[str, int] = {}
    for ops in doc.get("paths", {}).values():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "the request does not fit this description (the problem's "
                                                   "`errors` name each field)", "content": _PROBLEM_CONTENT}
            for status, text in ERROR_STATUSES.items():
                answer = responses.setdefault(str(status), {"description": text})
                answer.setdefault("content", {}).update(_PROBLEM_CONTENT)
            ids[op["operationId"]] = ids.get(op["operationId"], 0) + 1
    for ops in doc.get("paths", {}).values():  # e.g. GET and HEAD of one route share FastAPI's id
        for method, op in ops.items():
            if ids[op["operationId"]] > 1:
                op["operationId"] = re.sub(r"_(get|head|post|put|patch|delete)$", "", op["operationId"]) + "_" + method
    return doc


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: FastAPI, scope: dict) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first
    route's: GET for ``/tokens/{id}``, where DELETE is served too)."""
    served = [m for m in _METHODS
              if any(route.matches({**scope, "method": m})[0] == Match.FULL for route in app.router.routes)]
    return ", ".join(served)
