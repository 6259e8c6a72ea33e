"""Schemathesis against a real hub (issue 19, point 10): the API's description is true.

Generated requests, from the OpenAPI document alone, once with the admin token and
once with a narrow scoped token: no 5xx, and every status, content type and body is
one the description declares. Bounded (examples per operation and a time budget per
run) so it stays a couple of minutes on two slow cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "unsupported_method",  # an undeclared method gets 405 with an Allow header
    "allow_header_conformance",  # ... naming exactly the methods the description declares there
])


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory):
    from tests.hubproc import HubProcess

    # generated requests are not attacks: keep the failed-authentication limiter out of the way
    h = HubProcess(tmp_path_factory.mktemp("st") / "data", env={"TETHER_AUTH_FAILURES_PER_MINUTE": "100000"}).start()
    yield h
    h.stop()


def narrow_token(h) -> str:
    space = h.make_space()
    _, token = h.make_user(grants={space: "write"}, scopes=[f"publish:{space}/ci"], max_files=50, max_bytes=1 << 20)
    return token


@pytest.mark.parametrize("who", ["admin", "narrow"])
def test_the_description_holds_for_generated_requests(fuzzed_hub, who, tmp_path):
    token = fuzzed_hub.admin_token if who == "admin" else narrow_token(fuzzed_hub)
    argv = [
        str(SCHEMATHESIS), "run", f"{fuzzed_hub.url}/api/v1/openapi.json", "--checks", CHECKS,
        "-H", f"Authorization: Bearer {token}", "--generation-with-security-parameters", "false",
        "--max-examples", "15", "--max-time", "75", "--phases", "examples,coverage,fuzzing",
        "--workers", "1",  # (CPython 3.11's ast.parse is not thread-safe; hypothesis calls it)
        "--seed", "19", "--generation-database", "none", "--no-color", "--max-failures", "20",
    ]
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
