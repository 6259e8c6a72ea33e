"""What the API's description says of publishing's names, ids and answers: the
patterns of the rules in ``publish.core`` (which still do the checking, with their
own 400s; see ``auth.params``), the manifest entry's shape, and what a download may
answer besides problems."""

from __future__ import annotations

from typing import Annotated, Any

from tether.auth.identities import SPACE_NAME_RE
from tether.auth.params import path_param, pattern, query_param
from tether.publish.core import BUILD_ID_RE, DIGEST_RE, MAX_PATH, MAX_SIZE, MODES, TYPE_RE

BuildType = Annotated[str, path_param(TYPE_RE, 64, "a build type: lowercase letters, digits, . _ -")]
BuildId = Annotated[str, path_param(BUILD_ID_RE, 128, "a build id: letters, digits, . _ + -")]
Digest = Annotated[str, path_param(DIGEST_RE, 64, "a sha256: 64 lowercase hex digits")]
UploadId = Annotated[str, path_param(r"^[0-9a-f]{32}$", 32, "an upload's id, as starting it answered")]
FILE_ENTRY = {
    "type": "object", "required": ["path", "digest", "size"], "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH,
                 "description": "relative POSIX path: no empty, '.' or '..' segment, no backslash or control character"},
        "digest": {"type": "string", **pattern(DIGEST_RE)},
        "size": {"type": "integer", "minimum": 0, "maximum": MAX_SIZE},
        "mode": {"type": "integer", "enum": list(MODES), "default": MODES[0]},
    },
}
SpaceQuery = Annotated[str, query_param(SPACE_NAME_RE, 128, "the space")]
TypeQuery = Annotated[str, query_param(TYPE_RE, 128, "the build type")]
BuildQuery = Annotated[str, query_param(BUILD_ID_RE, 256, "the build id")]

_SIGN_IN = {"text/html": {"schema": {"type": "string"}}}  # a browser (Accept: text/html) gets the sign-in form
DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file (its type guessed from its name) or a directory: an HTML index, "
                         "JSON with ?format=json", "content": {"*/*": {}}},
    206: {"description": "the range asked for", "content": {"*/*": {}}},
    304: {"description": "not modified: If-None-Match named its ETag"},
    308: {"description": "a directory asked without its trailing '/': go there"},
    401: {"description": "a private build", "content": _SIGN_IN},
    403: {"description": "this token may not read it", "content": _SIGN_IN},
    416: {"description": "the range starts past the end of the file"},
}
