"""The pure publishing rules: paths, build ids, type mapping, manifests."""

from __future__ import annotations

import hashlib
import unicodedata

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.publish.core import (
    PathError,
    build_prefix,
    collision_key,
    is_simple_path,
    validate_build_id,
    validate_manifest,
    validate_path,
)

D = "a" * 64


@pytest.mark.parametrize("ok", ["a", "a/b/c.txt", "out/boot.img", "caf\u00e9/x", "a b/c", "-x", "..a/b..", ".hidden"])
def test_good_paths(ok):
    assert validate_path(ok) == ok


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", ".", "a/./b", "a//b", "a/", "x\\y", "nul\x00",
                                 "tab\tname", "bidi\u202eevil", "line\u2028sep", "a" * 1025, "s/" + "x" * 256])
def test_bad_paths(bad):
    with pytest.raises(PathError):
        validate_path(bad)


@given(st.text(max_size=300))
def test_any_accepted_path_is_relative_and_free_of_dot_segments(text):
    try:
        p = validate_path(text)
    except PathError:
        return
    assert not p.startswith("/") and "\\" not in p and "\x00" not in p
    assert all(seg not in ("", ".", "..") for seg in p.split("/"))


def test_build_prefix_and_ids():
    assert build_prefix(None, "ci", "123") == "ci/123"
    assert build_prefix("android/{build_id}", "android", "eng-42") == "android/eng-42"
    for bad in ["", "../x", "a/b", ".x", "x" * 129, "sp ace"]:
        with pytest.raises(PathError):
            validate_build_id(bad)
    with pytest.raises(PathError):
        build_prefix(None, "Bad Type", "1")


def test_manifest_rules():
    ok = validate_manifest([{"path": "a", "digest": D, "size": 1}, {"path": "b/c", "digest": D, "size": 0, "mode": 0o755}])
    assert [e.path for e in ok] == ["a", "b/c"]
    bad = [
        [],
        [{"path": "a", "digest": "A" * 64, "size": 1}],
        [{"path": "a", "digest": D, "size": -1}],
        [{"path": "a", "digest": D, "size": True}],
        [{"path": "a", "digest": D, "size": 1, "mode": 0o777}],
        [{"path": "A", "digest": D, "size": 1}, {"path": "a", "digest": D, "size": 1}],
        [{"path": "x", "digest": D, "size": 1}, {"path": "x/y", "digest": D, "size": 1}],
        ["not a dict"],
    ]
    for m in bad:
        with pytest.raises(PathError):
            validate_manifest(m)
    with pytest.raises(PathError):
        validate_manifest([{"path": f"f{i}", "digest": D, "size": 1} for i in range(11)], max_files=10)


def test_collision_key_folds_case_and_unicode_forms():
    assert collision_key("Caf\u00e9") == collision_key("cafe\u0301")  # NFC vs NFD, and case
    assert collision_key("A/B") == collision_key("a/b")
    # folding can undo composition: U+0390 and its capital's decomposed form (U+03AA
    # U+0301) fold to canonically equivalent strings, so they must share a key
    assert collision_key("\u0390") == collision_key("\u03aa\u0301")


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=8))
def test_collision_key_is_a_fixpoint(path):
    """Every name maps to a key that is its own key: two names whose keys are names that
    collide cannot get different keys."""
    key = collision_key(path)
    assert collision_key(key) == key
    assert collision_key(unicodedata.normalize("NFD", path)) == key


def test_a_manifest_with_two_greek_names_that_fold_together_is_refused():
    with pytest.raises(PathError, match="collide"):
        validate_manifest([{"path": "\u0390", "digest": "a" * 64, "size": 1},
                           {"path": "\u03aa\u0301", "digest": "b" * 64, "size": 1}])


def test_manifest_digest_names_the_content_not_the_order():
    from tether.publish.core import manifest_digest

    a = ("a.txt", "1" * 64, 3, 0o644)
    b = ("b/c", "2" * 64, 1, 0o755)
    base = manifest_digest([a, b])
    assert base == manifest_digest([b, a])
    assert base == hashlib.sha256(f"a.txt\x00{'1' * 64}\x003\x00420\nb/c\x00{'2' * 64}\x001\x00493\n".encode()).hexdigest()
    # every field counts
    for changed in (("a.txt", "3" * 64, 3, 0o644), ("a.txt", "1" * 64, 4, 0o644), ("a.txt", "1" * 64, 3, 0o755),
                    ("A.txt", "1" * 64, 3, 0o644)):
        assert manifest_digest([changed, b]) != base
    assert manifest_digest([a]) != base


# -- the fast path for plain ASCII paths ---------------------------------------------------

_ascii_paths = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=300) | st.lists(
    st.sampled_from(["a", ".", "..", "...", ".a", "a.", "", " ", "b\\c", "x" * 255, "y" * 256, "\x7f", "\t"]),
    max_size=6,
).map("/".join)


@settings(max_examples=2000, deadline=None)
@given(_ascii_paths)
def test_the_simple_path_match_agrees_with_validate_path_on_ascii(path):
    """validate_manifest skips validate_path for what the regex matches: it must accept
    nothing validate_path refuses, and on ASCII it should miss nothing it accepts."""
    try:
        validate_path(path)
        valid = True
    except PathError:
        valid = False
    assert is_simple_path(path) == valid, path


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_the_simple_path_match_never_accepts_what_validate_path_refuses(path):
    if is_simple_path(path):
        validate_path(path)  # must not raise


def test_a_bad_digest_among_good_ones_is_named():
    good = {"digest": "a" * 64, "size": 1, "mode": 0o644}
    entries = [{"path": f"f{i}", **good} for i in range(5)]
    entries[3]["digest"] = "A" * 64
    with pytest.raises(PathError, match="f3: digest must be 64 lowercase hex"):
        validate_manifest(entries)
    entries[3]["digest"] = "a" * 63 + "\n"
    with pytest.raises(PathError, match="f3: digest"):
        validate_manifest(entries)
