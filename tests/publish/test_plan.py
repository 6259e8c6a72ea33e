"""The publish planner (publish.plan): the upload plan and the commit negotiation, with
no hub and no files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.publish.frames import batch_length
from tether.publish.plan import (
    BlobsMissing,
    Cached,
    Commit,
    Committed,
    Done,
    Limits,
    LookUpCache,
    Negotiation,
    NegotiationError,
    SendAssumed,
    Sent,
    UnknownManifest,
    Upload,
    classify,
    lease_running_out,
    next_chunk,
    plan_chunks,
    unhashed_candidates,
    upload_tasks,
)

SMALL = Limits(small_max=10, medium_max=100, chunk_size=7, batch_max_bytes=300, batch_max_blobs=3, unhashed_min=50)


def digest(i: int) -> str:
    return f"{i:064x}"


# -- the upload plan --------------------------------------------------------------------


def test_classify_with_limits():
    assert [classify(n, SMALL) for n in (0, 10, 11, 100, 101)] == ["small", "small", "medium", "medium", "large"]
    assert classify(1 << 20) == "small" and classify(64 << 20) == "medium" and classify((64 << 20) + 1) == "large"


@given(st.lists(st.integers(0, 250), max_size=40))
def test_upload_tasks_send_each_blob_once_in_its_way(sizes):
    blobs = [(digest(i), s) for i, s in enumerate(sizes)]
    tasks = upload_tasks(blobs, SMALL)
    size = dict(blobs)
    sent = [d for kind, what in tasks for d in (what if kind == "batch" else [what])]
    assert sorted(sent) == sorted(size)
    kinds = [kind for kind, _ in tasks]
    # large first, then medium, then batches; each of the first two largest first
    assert kinds == sorted(kinds, key=["large", "medium", "batch"].index)
    for kind in ("large", "medium"):
        run = [size[d] for k, d in tasks if k == kind]
        assert run == sorted(run, reverse=True)
        assert all(classify(size[d], SMALL) == kind for k, d in tasks if k == kind)
    for kind, what in tasks:
        if kind == "batch":
            assert all(classify(size[d], SMALL) == "small" for d in what)
            assert len(what) <= SMALL.batch_max_blobs
            assert len(what) == 1 or batch_length([(d, size[d]) for d in what]) <= SMALL.batch_max_bytes


@given(st.integers(0, 100), st.data())
def test_next_chunk_walks_the_plan(size, data):
    offset = data.draw(st.integers(0, size))
    start, end = next_chunk(size, offset, SMALL.chunk_size)
    assert start == offset
    if offset == size:
        assert end == size  # the empty PUT that finishes the upload
    else:
        assert (start, end) == plan_chunks(size, offset, SMALL.chunk_size)[0]
        assert 0 < end - start <= SMALL.chunk_size


def test_next_chunk_refuses_an_offset_past_the_end():
    with pytest.raises(ValueError):
        next_chunk(10, 11, 4)


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 120), max_size=20), st.data())
def test_unhashed_candidates(files, data):
    cached = set(data.draw(st.lists(st.sampled_from(sorted(files)), unique=True))) if files else set()
    got = unhashed_candidates(files.items(), cached, SMALL)
    sizes = list(files.values())
    assert set(got) == {p for p, s in files.items() if p not in cached and s >= 50 and sizes.count(s) == 1}
    assert [files[p] for p in got] == sorted((files[p] for p in got), reverse=True)


def test_lease_running_out():
    assert not lease_running_out(79.9, 100)
    assert lease_running_out(80, 100)
    assert not lease_running_out(1e9, float("inf"))


# -- the commit negotiation -------------------------------------------------------------


def drive(talks: Negotiation, outcomes: dict[type, list]) -> list:
    """Run the negotiation, answering each kind of step from ``outcomes`` in turn."""
    steps = []
    step = talks.next_step()
    while not isinstance(step, Done):
        steps.append(step)
        assert len(steps) < 20
        step = talks.handle(outcomes[type(step)].pop(0))
    return steps


def test_an_unchanged_tree_commits_by_its_remembered_digest():
    steps = drive(Negotiation(remembered="m1", published_before=True), {Commit: [Committed({"ok": 1})]})
    assert steps == [Commit("m1", manifest=False, expect_missing=False)]


def test_a_remembered_digest_the_hub_does_not_know_falls_back_to_the_cache():
    talks = Negotiation(remembered="m1", published_before=True)
    steps = drive(talks, {Commit: [UnknownManifest(), Committed({})], LookUpCache: [Cached(5, 5, None)]})
    # the digest just refused is not sent again: the manifest itself
    assert steps == [Commit("m1", False, False), LookUpCache(), Commit(None, manifest=True, expect_missing=True)]


def test_every_digest_cached_commits_first_and_uploads_only_if_blobs_are_missing():
    talks = Negotiation(published_before=True)
    steps = drive(talks, {LookUpCache: [Cached(5, 5, "m2")], Commit: [BlobsMissing(), Committed({})],
                          Upload: [Sent(assumed=False)]})
    assert steps == [LookUpCache(), Commit("m2", True, True), Upload(trust=False), Commit(None, True, False)]


def test_a_new_tree_uploads_then_commits():
    steps = drive(Negotiation(), {LookUpCache: [Cached(0, 5)], Upload: [Sent(False)], Commit: [Committed({})]})
    assert steps == [LookUpCache(), Upload(trust=False), Commit(None, manifest=True, expect_missing=False)]


def test_a_changed_tree_trusts_the_cache_and_sends_what_the_commit_finds_missing():
    talks = Negotiation(published_before=True)
    steps = drive(talks, {LookUpCache: [Cached(3, 5)], Upload: [Sent(assumed=True)],
                          Commit: [BlobsMissing(), Committed({})], SendAssumed: [Sent(False)]})
    assert steps == [LookUpCache(), Upload(trust=True), Commit(None, True, True), SendAssumed(),
                     Commit(None, True, False)]
    # nothing taken on trust: the first commit is final
    steps = drive(Negotiation(published_before=True), {LookUpCache: [Cached(3, 5)], Upload: [Sent(assumed=False)],
                                                        Commit: [Committed({})]})
    assert steps[-1] == Commit(None, True, False)
    # a tree never published from here is not trusted, cache or not (another tree's digests)
    assert drive(Negotiation(), {LookUpCache: [Cached(3, 5)], Upload: [Sent(False)],
                                 Commit: [Committed({})]})[1] == Upload(trust=False)


def test_outcomes_that_do_not_answer_the_step_are_refused():
    talks = Negotiation()
    with pytest.raises(NegotiationError):
        talks.handle(Committed({}))  # the step is LookUpCache
    talks.handle(Cached(0, 1))
    talks.handle(Sent(False))
    with pytest.raises(NegotiationError):
        talks.handle(BlobsMissing())  # the last commit: blobs missing is a failure, not a step
    with pytest.raises(NegotiationError):
        talks.handle(UnknownManifest())  # a manifest was sent


@given(remembered=st.sampled_from([None, "m"]), published_before=st.booleans(), data=st.data())
def test_every_negotiation_ends_after_at_most_one_upload(remembered, published_before, data):
    """Whatever the hub answers (of the answers each step allows), the negotiation ends in a
    few steps, uploads at most once, and its last commit sends the manifest and takes no
    "blobs missing" for an answer."""
    talks = Negotiation(remembered=remembered, published_before=published_before)
    step = talks.next_step()
    steps: list = []
    while not isinstance(step, Done):
        steps.append(step)
        assert len(steps) <= 6
        if isinstance(step, Commit):
            allowed = [Committed({"n": len(steps)})]
            if not step.manifest:
                allowed.append(UnknownManifest())
            if step.expect_missing:
                allowed.append(BlobsMissing())
            outcome = data.draw(st.sampled_from(allowed))
        elif isinstance(step, LookUpCache):
            files = data.draw(st.integers(1, 5))
            outcome = Cached(data.draw(st.integers(0, files)), files, "d")
        else:
            outcome = Sent(assumed=data.draw(st.booleans()) if isinstance(step, Upload) and step.trust else False)
        step = talks.handle(outcome)
    assert isinstance(steps[-1], Commit)
    assert sum(isinstance(s, Upload) for s in steps) <= 1
    assert sum(isinstance(s, SendAssumed) for s in steps) <= 1
    if any(isinstance(s, Upload | SendAssumed) for s in steps):
        last = steps[-1]
        assert last.manifest and last.same_as is None
    assert step.result == {"n": len(steps)}
