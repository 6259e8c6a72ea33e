"""Every name and digest check refuses a trailing newline.

``re.match(r"^...$")`` accepts "name\\n" ("$" also matches before a final newline);
a user name ending in a newline would have split its authorized_keys line in two.
Each check is tried with a good value (accepted) and the same value plus "\\n".
"""

from __future__ import annotations

import pytest

from tether.auth import identities, tokens
from tether.problems import Problem
from tether.log.store import RecordError, validate_author
from tether.publish.core import PathError, validate_build_id, validate_manifest, validate_type
from tether.signal.core import _HEX_RE, _HEX_TIME_RE
from tether.log.ssh import LogHandler
from tether.ssh import authorized_keys, entry

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
DIGEST = "0" * 64
TOKEN = "tth_0123456789abcdef_" + "A" * 43


def _manifest(digest: str) -> None:
    validate_manifest([{"path": "a.txt", "digest": digest, "size": 1, "mode": 0o644}])


def _forced(user: str = "bob", fingerprint: str = "SHA256:abc") -> None:
    authorized_keys.forced_line("/usr/bin/tether", user, KEY, fingerprint)


def _must(ok: bool) -> None:
    if not ok:
        raise ValueError("refused")


CHECKS = [
    ("user name", lambda v: identities.check_user_name(v), "bob", Problem),
    ("build id", validate_build_id, "1.0", PathError),
    ("build type", validate_type, "android", PathError),
    ("manifest digest", _manifest, DIGEST, PathError),
    ("authorized_keys user", lambda v: _forced(user=v), "bob", ValueError),
    ("authorized_keys fingerprint", lambda v: _forced(fingerprint=v), "SHA256:abc", ValueError),
    ("log author", validate_author, "ci@builder", RecordError),
    ("ssh log request space", lambda v: entry.parse_request(f"tether-log pull '{v}'", {"tether-log": LogHandler()}),
     "builds", entry.Exit),
    ("token", lambda v: _must(tokens.split_token(v) is not None), TOKEN, ValueError),
    ("token id", lambda v: _must(tokens.is_token_id(v)), "0123456789abcdef", ValueError),
    ("signal time field", lambda v: _must(bool(_HEX_TIME_RE.match(v.encode()))), "1a", ValueError),
    ("signal uuid field", lambda v: _must(bool(_HEX_RE.match(v.encode()))), "00ff", ValueError),
]


@pytest.mark.parametrize("check, good, error", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_good_value_passes_and_the_same_with_a_newline_is_refused(check, good, error):
    check(good)
    with pytest.raises(error):
        check(good + "\n")


def test_space_names_refuse_a_trailing_newline():
    assert identities.SPACE_NAME_RE.match("builds")
    assert not identities.SPACE_NAME_RE.match("builds\n")
