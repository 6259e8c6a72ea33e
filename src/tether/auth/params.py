"""The shapes of names and ids in the API's description, from the rules that check them.

Routes declare ``name: UserName`` instead of ``name: str`` so the OpenAPI document
states the real pattern (a generated client or a fuzzer can rely on it). The patterns
describe; they do not replace the checks: a value that breaks one still meets the
service's own rule and its specific 400, as before.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import Field
from starlette.convertors import Convertor, register_url_convertor

from tether.auth.caveats import SCOPE_KINDS
from tether.auth.identities import SPACE_NAME_RE, USER_NAME_RE
from tether.auth.tokens import _ID_RE as TOKEN_ID_RE  # (same package)


def pattern(rx: re.Pattern[str] | str, max_length: int | None = None, **more: Any) -> dict[str, Any]:
    """JSON Schema keywords for a Python regex: its ``\\A…\\Z`` anchors spelled ``^…$``
    (the ECMA dialect OpenAPI uses)."""
    text = rx.pattern if isinstance(rx, re.Pattern) else rx
    if text.startswith("\\A"):
        text = "^" + text[2:]
    if text.endswith("\\Z"):
        text = text[:-2] + "$"
    extra = {"pattern": text, **more}
    if max_length is not None:
        extra["maxLength"] = max_length
    return extra


def path_param(rx: re.Pattern[str] | str, max_length: int, description: str) -> Any:
    return Path(description=description, json_schema_extra=pattern(rx, max_length))


def query_param(rx: re.Pattern[str] | str, max_length: int, description: str, **kw: Any) -> Any:
    # max_length is also enforced (it was before); the pattern only documents
    return Query(description=description, max_length=max_length, json_schema_extra={"pattern": pattern(rx)["pattern"]}, **kw)


def field(rx: re.Pattern[str] | str, max_length: int, **kw: Any) -> Any:
    """A body field documented with ``rx``; its length enforced as before."""
    return Field(max_length=max_length, json_schema_extra={"pattern": pattern(rx)["pattern"]}, **kw)


USER_DOC = "a user name: lowercase letters, digits, _ . -"
SPACE_DOC = "a space name: lowercase letters, digits, . _ -"
SCOPE_RE = rf"^(?:{'|'.join(SCOPE_KINDS)}):[a-z0-9][a-z0-9._-]{{0,63}}(?:/[^:\\]+)?(?::(?:none|read|write|admin))?$"

UserName = Annotated[str, path_param(USER_NAME_RE, 32, USER_DOC)]
SpaceName = Annotated[str, path_param(SPACE_NAME_RE, 64, SPACE_DOC)]
TokenId = Annotated[str, path_param(TOKEN_ID_RE, 16, "a token's id: 16 hex digits (the part after 'tth_')")]
KeyRef = Annotated[str, path_param(r"^(?:[0-9]{1,18}|SHA256:[A-Za-z0-9+/]{43})$", 64,
                                   "a key's id or its SHA256 fingerprint as `ssh-keygen -l` prints it")]


class _Segment(Convertor[str]):
    def __init__(self, regex: str):
        self.regex = regex

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def path_segment(name: str, regex: str) -> None:
    """Let routes write ``{param:NAME}`` for a path segment matching ``regex`` only. Where two
    routes' paths overlap (``/things/{id}/{verb}`` and ``/things/{id}/logs``), the router
    then sends each URL to one of them, and a 405's ``Allow`` names the methods of the
    operations the description declares at that URL, not of others that would also match."""
    register_url_convertor(name, _Segment(regex))
