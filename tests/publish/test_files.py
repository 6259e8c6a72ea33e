"""The publishing client's local side: globbing, strip, path plans, symlinks, hashing and its cache."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from tether.publish.files import (
    FileChangedError,
    HashCache,
    InputError,
    LocalFile,
    default_cache_path,
    expand,
    hash_file,
    hash_files,
    plan,
    strip,
)

OLD = time.time_ns() - 3600 * 10**9  # an mtime well outside the racy window


def make(root: Path, rel: str, data: bytes | str = b"x", *, old: bool = True, exe: bool = False) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    if exe:
        p.chmod(0o755)
    if old:
        os.utime(p, ns=(OLD, OLD))
    return p


def rels(files: list[LocalFile]) -> list[str]:
    return [f.rel_path for f in files]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for rel in [
        "top.txt",
        ".hidden",
        "out/a.img",
        "out/b.img",
        "out/notes.txt",
        "out/deep/er/c.img",
        "out/.cache/x.img",
        ".git/config",
    ]:
        make(root, rel, rel)
    return root


# -- globbing ---------------------------------------------------------------------------


def test_star_stays_in_one_directory(tree):
    assert rels(expand(tree, ["out/*.img"])) == ["out/a.img", "out/b.img"]


def test_double_star_recurses_but_skips_hidden(tree):
    assert rels(expand(tree, ["out/**/*.img"])) == ["out/a.img", "out/b.img", "out/deep/er/c.img"]
    assert rels(expand(tree, ["**"])) == [
        "out/a.img", "out/b.img", "out/deep/er/c.img", "out/notes.txt", "top.txt",
    ]  # fmt: skip


def test_hidden_files_only_when_the_pattern_says_so(tree):
    assert rels(expand(tree, [".*"])) == [".hidden"]
    assert rels(expand(tree, ["out/.cache/*"])) == ["out/.cache/x.img"]
    assert rels(expand(tree, [".git/**"])) == [".git/config"]
    assert rels(expand(tree, ["**/.cache/*.img"])) == ["out/.cache/x.img"]


def test_directories_are_skipped_and_results_sorted(tree):
    got = rels(expand(tree, ["out/*"]))
    assert got == ["out/a.img", "out/b.img", "out/notes.txt"]  # not out/deep


def test_overlapping_globs_collapse(tree):
    got = rels(expand(tree, ["out/*.img", "out/**", "out/a.img"]))
    assert got == ["out/a.img", "out/b.img", "out/deep/er/c.img", "out/notes.txt"]


def test_pattern_matching_nothing_is_an_error(tree):
    with pytest.raises(InputError, match=r"pattern 'nope/\*\.img' matched no files") as e:
        expand(tree, ["out/*.img", "nope/*.img"])
    assert "relative to --root" in str(e.value) and "quote them" in str(e.value)
    assert "hidden names match only a pattern part that starts with a dot" in str(e.value)
    with pytest.raises(InputError) as e:
        expand(tree, [".nope/*"])
    assert "relative to --root" in str(e.value) and "hidden" not in str(e.value)


def test_pattern_matching_only_directories_is_an_error(tree):
    with pytest.raises(InputError, match="matched no files"):
        expand(tree, ["out/deep"])


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../x", "out/../../x", ""])
def test_patterns_cannot_leave_the_root(tree, pattern):
    with pytest.raises(InputError):
        expand(tree, [pattern])


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        expand(tmp_path / "missing", ["*"])


def test_no_patterns(tree):
    with pytest.raises(InputError, match="no glob patterns"):
        expand(tree, [])


def test_character_classes_and_question_mark(tree):
    assert rels(expand(tree, ["out/[ab].im?"])) == ["out/a.img", "out/b.img"]


def test_modes_follow_the_exec_bit(tmp_path):
    make(tmp_path, "run.sh", "#!/bin/sh\n", exe=True)
    make(tmp_path, "data.bin", b"\0")
    (tmp_path / "data.bin").chmod(0o600)
    modes = {f.rel_path: f.mode for f in expand(tmp_path, ["*"])}
    assert modes == {"run.sh": 0o755, "data.bin": 0o644}


def test_local_file_fields(tmp_path):
    p = make(tmp_path, "a/b.txt", b"hello")
    (f,) = expand(tmp_path, ["a/b.txt"])
    st = p.stat()
    assert f.rel_path == "a/b.txt"
    assert f.abs_path == str(p.resolve())
    assert (f.size, f.mtime_ns, f.inode) == (5, st.st_mtime_ns, st.st_ino)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match="not a regular file"):
        expand(tmp_path, ["pipe"])


# -- symlinks ---------------------------------------------------------------------------


def test_symlink_inside_root_is_followed_under_the_link_name(tmp_path):
    root = tmp_path / "root"
    target = make(root, "real/data.bin", b"payload")
    (root / "link.bin").symlink_to("real/data.bin")
    files = {f.rel_path: f for f in expand(root, ["*.bin", "real/*"])}
    assert set(files) == {"link.bin", "real/data.bin"}
    assert files["link.bin"].abs_path == str(target.resolve())
    assert files["link.bin"].size == 7


@pytest.mark.parametrize("pattern", ["*.txt", "**"])  # "**": the quick walk (files._expand_tree)
def test_symlink_outside_root_is_refused(tmp_path, pattern):
    root = tmp_path / "root"
    make(root, "ok.txt")
    secret = make(tmp_path, "secret.txt", b"do not publish")
    (root / "leak.txt").symlink_to(secret)
    with pytest.raises(InputError, match="leak.txt is a symbolic link .* outside the root"):
        expand(root, [pattern])


def test_symlinked_directory_outside_root_is_refused(tmp_path):
    root = tmp_path / "root"
    make(root, "ok.txt")
    make(tmp_path, "elsewhere/secret.txt")
    (root / "dir").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the root"):
        expand(root, ["dir/*"])
    # `**` does not descend into it, but matching the link itself is refused too
    with pytest.raises(InputError, match="dir is a symbolic link"):
        expand(root, ["**"])
    assert rels(expand(root, ["*.txt"])) == ["ok.txt"]


def test_symlinked_directory_further_up_the_path_is_noticed(tmp_path):
    """A link two directories above the file, reached by a pattern that names it:
    every directory under it counts as linked, so its files are refused as outside."""
    root = tmp_path / "root"
    make(root, "a/ok.txt")
    make(tmp_path, "elsewhere/sub/secret.txt")
    (root / "a" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the root"):
        expand(root, ["a/link/sub/*.txt"])
    with pytest.raises(InputError, match="outside the root"):
        expand(root, ["a/*/sub/*"])
    assert rels(expand(root, ["a/*.txt"])) == ["a/ok.txt"]


def test_double_star_does_not_descend_into_symlinked_directories(tmp_path):
    make(tmp_path, "real/f.txt")
    (tmp_path / "alias").symlink_to("real")
    assert rels(expand(tmp_path, ["**/*.txt"])) == ["real/f.txt"]


def test_relative_symlink_escaping_via_dotdot_is_refused(tmp_path):
    root = tmp_path / "root"
    make(root, "ok.txt")
    make(tmp_path, "secret.txt")
    (root / "up.txt").symlink_to("../secret.txt")
    with pytest.raises(InputError, match="outside the root"):
        expand(root, ["up.txt"])


def test_broken_symlink_is_refused(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="broken symbolic link"):
        expand(tmp_path, ["dangling"])


def test_symlink_cycles_do_not_loop(tmp_path):
    make(tmp_path, "a/x.txt")
    (tmp_path / "a" / "loop").symlink_to("..")
    assert rels(expand(tmp_path, ["**/*.txt"])) == ["a/x.txt"]


def test_symlink_to_directory_inside_root_through_explicit_pattern(tmp_path):
    make(tmp_path, "real/f.txt", b"f")
    (tmp_path / "alias").symlink_to("real")
    assert rels(expand(tmp_path, ["alias/*"])) == ["alias/f.txt"]


# -- strip ------------------------------------------------------------------------------


def test_strip():
    assert strip("out/target/a.img", 0) == "out/target/a.img"
    assert strip("out/target/a.img", 2) == "a.img"


@pytest.mark.parametrize("n", [3, 4])
def test_strip_too_far_names_the_path(n):
    with pytest.raises(InputError, match="out/target/a.img"):
        strip("out/target/a.img", n)


# -- plan: destination paths ------------------------------------------------------------


def test_plan_pairs_files_with_stripped_destinations(tree):
    pairs = plan(expand(tree, ["out/**/*.img"]), 1)
    assert [(f.rel_path, d) for f, d in pairs] == [
        ("out/a.img", "a.img"), ("out/b.img", "b.img"), ("out/deep/er/c.img", "deep/er/c.img"),
    ]  # fmt: skip


def test_plan_refuses_case_collisions_naming_both(tmp_path):
    make(tmp_path, "x/A.txt")
    make(tmp_path, "y/a.txt")
    with pytest.raises(InputError) as e:
        plan(expand(tmp_path, ["*/*.txt"]), 1)
    assert str(e.value) == ("'x/A.txt' and 'y/a.txt' would be published as 'A.txt' and 'a.txt', names that differ "
                            "only in case or Unicode normalisation, so they collide (on case-insensitive filesystems "
                            "and in browsers); rename one")
    with pytest.raises(InputError) as e:
        plan(expand(tmp_path / "x", ["*.txt"]) + expand(tmp_path / "y", ["*.txt"]), 0)
    assert "'A.txt' and 'a.txt' differ only in case or Unicode normalisation, so they collide" in str(e.value)


def test_plan_refuses_unicode_normalisation_collisions(tmp_path):
    nfc = unicodedata.normalize("NFC", "café.txt")
    nfd = unicodedata.normalize("NFD", "café.txt")
    assert nfc != nfd
    make(tmp_path, nfc)
    try:
        make(tmp_path, nfd)
    except OSError:
        pytest.skip("this filesystem normalises names itself")
    if len(os.listdir(tmp_path)) != 2:
        pytest.skip("this filesystem normalises names itself")
    with pytest.raises(InputError) as e:
        plan(expand(tmp_path, ["*.txt"]), 0)
    assert nfc in str(e.value) and nfd in str(e.value)


def test_plan_refuses_strip_that_merges_two_files(tmp_path):
    make(tmp_path, "a/same.txt")
    make(tmp_path, "b/same.txt")
    with pytest.raises(InputError, match="'a/same.txt' and 'b/same.txt' would both be published as 'same.txt'"):
        plan(expand(tmp_path, ["*/*.txt"]), 1)


def test_plan_refuses_file_that_is_also_a_directory(tmp_path):
    make(tmp_path, "one/x")
    make(tmp_path, "two/x/y")
    with pytest.raises(InputError, match="directory"):
        plan(expand(tmp_path, ["one/x", "two/x/y"]), 1)


def test_plan_refuses_control_characters_and_backslashes(tmp_path):
    make(tmp_path, "bad\nname.txt")
    with pytest.raises(InputError, match="control character"):
        plan(expand(tmp_path, ["*.txt"]), 0)
    (tmp_path / "bad\nname.txt").unlink()
    make(tmp_path, "back\\slash.txt")
    with pytest.raises(InputError, match="backslash"):
        plan(expand(tmp_path, ["*.txt"]), 0)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 names")
def test_plan_refuses_undecodable_names(tmp_path):
    name = os.fsdecode(b"latin1-\xe9.txt")
    try:
        make(tmp_path, name)
    except OSError:
        pytest.skip("filesystem refuses non-UTF-8 names")
    with pytest.raises(InputError):
        plan(expand(tmp_path, ["*.txt"]), 0)


def test_no_plan_can_produce_dotdot(tree):
    """Patterns cannot leave the root, names cannot be '..', strip only removes
    components: every destination is a clean relative path."""
    for n in range(3):
        try:
            pairs = plan(expand(tree, ["**", ".*", "out/.cache/*", ".git/*"]), n)
        except InputError:
            continue
        for _, dest in pairs:
            parts = dest.split("/")
            assert ".." not in parts and "." not in parts and "" not in parts
            assert not dest.startswith("/")


# -- hashing and the hash cache -------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hash_files_digests(tmp_path):
    big = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
    make(tmp_path, "big.bin", big)
    make(tmp_path, "small.txt", b"hello")
    make(tmp_path, "empty", b"")
    files = expand(tmp_path, ["*"])
    got = hash_files(files, None, jobs=4)
    assert {f.rel_path: got[f.abs_path] for f in files} == {
        "big.bin": sha(big), "small.txt": sha(b"hello"), "empty": sha(b""),
    }  # fmt: skip
    assert got.bytes_hashed == len(big) + 5


def test_cache_second_run_hashes_nothing_and_touch_rehashes(tmp_path):
    root = tmp_path / "root"
    for i in range(20):
        make(root, f"f{i:02}.txt", f"content {i}")
    cache_path = tmp_path / "cache" / "hashes.sqlite"
    files = expand(root, ["*"])
    with HashCache(cache_path) as cache:
        first = hash_files(files, cache, jobs=4)
    assert first.bytes_hashed == sum(f.size for f in files)
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600

    with HashCache(cache_path) as cache:
        second = hash_files(expand(root, ["*"]), cache, jobs=4)
    assert second.bytes_hashed == 0
    assert second.cache_hits == 20
    assert dict(second) == dict(first)

    # touching a file (new mtime) makes it be hashed again; content changes are seen
    p = root / "f03.txt"
    p.write_bytes(b"new content!")
    os.utime(p, ns=(OLD + 10**9, OLD + 10**9))
    with HashCache(cache_path) as cache:
        third = hash_files(expand(root, ["*"]), cache, jobs=4)
    assert third.bytes_hashed == len(b"new content!")
    assert third[p.resolve()] == sha(b"new content!")


def test_cache_ignores_files_written_just_now(tmp_path):
    """A file modified within the filesystem clock's tick could change again
    unseen; such files are hashed but not cached."""
    make(tmp_path, "fresh.txt", b"fresh", old=False)
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(expand(tmp_path, ["*.txt"]), cache)
    with HashCache(cache_path) as cache:
        again = hash_files(expand(tmp_path, ["*.txt"]), cache)
    assert again.bytes_hashed == 5


def test_cache_key_includes_inode(tmp_path):
    p = make(tmp_path, "f.txt", b"aaaa")
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(expand(tmp_path, ["f.txt"]), cache)
    # replace by a new file (new inode) with the same size and mtime
    tmp = make(tmp_path, "f.new", b"bbbb")
    os.replace(tmp, p)
    with HashCache(cache_path) as cache:
        again = hash_files(expand(tmp_path, ["f.txt"]), cache)
    assert again.bytes_hashed == 4
    assert again[p.resolve()] == sha(b"bbbb")


def test_unusable_cache_is_ignored(tmp_path):
    make(tmp_path, "f.txt", b"abc")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache = HashCache(blocker / "hashes.sqlite")
    assert not cache.usable
    got = hash_files(expand(tmp_path, ["f.txt"]), cache)
    assert got.bytes_hashed == 3


def test_default_cache_path_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "tether" / "hashes.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "tether" / "hashes.sqlite"


def test_symlinks_to_the_same_file_are_hashed_once(tmp_path):
    make(tmp_path, "real.bin", b"12345")
    (tmp_path / "alias.bin").symlink_to("real.bin")
    files = expand(tmp_path, ["*.bin"])
    assert len(files) == 2
    got = hash_files(files, None)
    assert got.bytes_hashed == 5


def test_file_changed_after_listing_is_detected(tmp_path):
    p = make(tmp_path, "f.txt", b"short")
    (f,) = expand(tmp_path, ["f.txt"])
    p.write_bytes(b"much longer now")
    with pytest.raises(FileChangedError, match="f.txt changed while it was being published; re-run"):
        hash_file(f)


def test_cache_with_many_files_in_many_directories(tmp_path):
    root = tmp_path / "root"
    for i in range(150):
        make(root, f"d{i % 7}/sub{i % 3}/f{i}.txt", f"n{i}")
    (tmp_path / "root-sibling").mkdir()  # a path sharing the root's prefix
    make(tmp_path, "root-sibling/x.txt", "x")
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(expand(tmp_path, ["root-sibling/*"]), cache)
        first = hash_files(expand(root, ["**"]), cache)
        second = hash_files(expand(root, ["**"]), cache)
    assert first.bytes_hashed > 0 and first.cache_hits == 0
    assert second.bytes_hashed == 0 and second.cache_hits == 150
    assert dict(first) == dict(second)


def test_plan_refuses_file_that_is_also_a_deeper_directory(tmp_path):
    # "a" is a file, and "a/b/c" needs it to be a directory two levels up; the
    # other files share parents, so those are looked up once
    make(tmp_path, "one/a")
    for rel in ["two/a/b/c", "two/a/b/d", "two/z/y"]:
        make(tmp_path, rel)
    with pytest.raises(InputError, match="'one/a' would be published as the file 'a'"):
        plan(expand(tmp_path, ["one/a", "two/**"]), 1)


def test_cache_of_an_older_layout_is_rebuilt(tmp_path):
    import sqlite3

    make(tmp_path, "f.txt", b"abc")
    cache_path = tmp_path / "c.sqlite"
    db = sqlite3.connect(cache_path)  # version 1: one row per file
    db.execute("CREATE TABLE hashes (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
               " inode INTEGER NOT NULL, digest TEXT NOT NULL)")
    db.commit()
    db.close()
    with HashCache(cache_path) as cache:
        assert cache.usable
        assert hash_files(expand(tmp_path, ["f.txt"]), cache).bytes_hashed == 3
    with HashCache(cache_path) as cache:
        assert hash_files(expand(tmp_path, ["f.txt"]), cache).cache_hits == 1
    tables = {r[0] for r in sqlite3.connect(cache_path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "hashes" not in tables


def test_damaged_cache_rows_are_misses(tmp_path):
    import marshal
    import sqlite3

    root = tmp_path / "root"
    path = str(make(root, "f.txt", b"abc").resolve())
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(expand(root, ["f.txt"]), cache)
    for junk in (b"\x00garbage", b"\xe9", marshal.dumps({path: (1,)})):
        db = sqlite3.connect(cache_path)
        db.execute("UPDATE dirs SET files = ?", (junk,))
        db.commit()
        db.close()
        with HashCache(cache_path) as cache:
            got = hash_files(expand(root, ["f.txt"]), cache)
        assert got.bytes_hashed == 3 and got[path] == sha(b"abc")


def test_cache_forgets_files_that_are_gone(tmp_path):
    root = tmp_path / "root"
    for name in ("keep.txt", "gone.txt"):
        make(root, name, name)
    cache_path = tmp_path / "c.sqlite"
    with HashCache(cache_path) as cache:
        hash_files(expand(root, ["*.txt"]), cache)
        (root / "gone.txt").unlink()
        make(root, "new.txt", "new")
        hash_files(expand(root, ["*.txt"]), cache)
        (row,) = cache._read([str(root.resolve())]).values()
    assert sorted(row) == [str(root.resolve() / "keep.txt"), str(root.resolve() / "new.txt")]


def test_rewritten_file_with_its_old_mtime_put_back_is_hashed_again(tmp_path):
    """Same size, same inode, same mtime (restored with utime, as cp -p, tar and rsync
    do): only the ctime tells, and the cache must not hand back the old digest."""
    root = tmp_path / "root"
    p = make(root, "f.bin", b"old content")
    cache_path = tmp_path / "cache.sqlite"
    with HashCache(cache_path) as cache:
        assert hash_files(expand(root, ["*"]), cache)[p.resolve()] == sha(b"old content")
    before = p.stat()
    for _ in range(100):  # until the ctime moves (coarse kernel clocks tick every 4-10 ms)
        with open(p, "r+b") as fh:  # in place: the inode stays
            fh.write(b"new content")
        os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = p.stat()
        if after.st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.005)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    with HashCache(cache_path) as cache:
        again = hash_files(expand(root, ["*"]), cache)
    assert again[p.resolve()] == sha(b"new content") and again.bytes_hashed == len(b"new content")


def test_cache_of_the_layout_without_ctime_is_rebuilt(tmp_path):
    import marshal
    import sqlite3

    p = make(tmp_path / "root", "f.txt", b"abc")
    st = p.stat()
    cache_path = tmp_path / "c.sqlite"
    db = sqlite3.connect(cache_path)  # version 2: (size, mtime_ns, inode, digest), here a wrong digest
    db.execute("CREATE TABLE dirs (dir BLOB PRIMARY KEY, files BLOB NOT NULL) WITHOUT ROWID")
    entry = {str(p.resolve()): (st.st_size, st.st_mtime_ns, st.st_ino, "f" * 64)}
    db.execute("INSERT INTO dirs VALUES (?, ?)", (os.fsencode(str(p.resolve().parent)), marshal.dumps(entry)))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with HashCache(cache_path) as cache:
        got = hash_files(expand(tmp_path / "root", ["f.txt"]), cache)
    assert got[p.resolve()] == sha(b"abc") and got.bytes_hashed == 3
    db = sqlite3.connect(cache_path)
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    (row,) = db.execute("SELECT files FROM dirs").fetchall()  # the old row is gone, the new one has the ctime
    assert marshal.loads(row[0]) == {str(p.resolve()): (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                                        sha(b"abc"))}
    db.close()
    with HashCache(cache_path) as cache:
        assert hash_files(expand(tmp_path / "root", ["f.txt"]), cache).cache_hits == 1


@pytest.mark.parametrize("pattern", ["**", "out/**", "out/*/**", "**/deep/**", "alias/**", "out/f.bin/**", "none/**"])
def test_the_quick_way_for_double_star_gives_what_the_general_way_gives(tmp_path, monkeypatch, pattern):
    """Patterns ending in '**' list and stat each directory through its descriptor
    (files._expand_tree); the general way must agree on every file, link and refusal."""
    import tether.publish.files as files_mod

    root = tmp_path / "root"
    for rel in ("top.txt", ".hidden", "out/f.bin", "out/.dot/x", "out/a/deep/g.txt", "out/b/h.txt",
                "out/b/.h2", "real/r.txt"):
        make(root, rel)
    make(root, "out/run.sh", exe=True)
    (root / "out" / "link.txt").symlink_to("../real/r.txt")  # a file inside: followed
    (root / "out" / "dirlink").symlink_to("../real")  # a directory inside: neither listed nor walked
    (root / "alias").symlink_to("out")  # a linked directory named by the pattern: the general way

    def both() -> tuple[object, object]:
        got = []
        for quick in (True, False):
            if not quick:
                monkeypatch.setattr(files_mod, "_expand_tree", lambda *a: None)
            try:
                got.append([tuple(f) for f in expand(root, [pattern])])
            except InputError as exc:
                got.append(("refused", str(exc)))
        return got[0], got[1]

    quick, general = both()
    assert quick == general
    if pattern == "out/**":
        assert [f[1] for f in quick] == ["out/a/deep/g.txt", "out/b/h.txt", "out/f.bin", "out/link.txt", "out/run.sh"]
        assert dict((f[1], f[5]) for f in quick)["out/run.sh"] == 0o755
    if pattern == "none/**":
        assert quick[0] == "refused"
