"""What a publish sends, and in which order it talks to the hub: pure decisions, no I/O.

Two parts, both driven by :mod:`tether.publish.client` (which does the hashing, the
requests and the waiting):

* **the upload plan**: which way each missing blob travels (:func:`classify`: many
  small ones to a batch request, a medium one in one streamed PUT, a large one in
  resumable chunks), how blobs are packed into batches (:func:`pack_batches`), the
  chunk ranges of a resumable upload (:func:`plan_chunks`, :func:`next_chunk`), the
  order of the uploads (:func:`upload_tasks`) and which large files may be sent
  before they are hashed (:func:`unhashed_candidates`). The sizes are a
  :class:`Limits`, so a test can shrink them;
* **the commit negotiation** (:class:`Negotiation`): commit by the manifest's digest
  (``same_as``) when the tree is known, else look at the hash cache; commit straight
  away when it knows every file, else hash, ask ``blobs/missing`` and send; commit the
  full manifest; when the hub says blobs are missing, send them and commit again. Like
  h11's connection it answers "what next" (:meth:`Negotiation.next_step`) and is told
  what happened (:meth:`Negotiation.handle`); it never sends anything itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from tether.publish.core import UNHASHED_MIN
from tether.publish.frames import framed_size

KiB = 1 << 10
MiB = 1 << 20

SMALL_MAX = 1 * MiB  # blobs up to this size travel many to a request
MEDIUM_MAX = 64 * MiB  # up to this, one streamed PUT; above, resumable chunks
BATCH_MAX_BYTES = 16 * MiB
BATCH_MAX_BLOBS = 2000  # as many as a group of small files (files.GROUP_FILES): one request per group
CHUNK_SIZE = 64 * MiB
MISSING_BATCH = 10_000  # digests per blobs/missing question
LEASE_MARGIN = 0.8  # ask again about skipped blobs once this much of the hub's lease has gone


class Limits(NamedTuple):
    """The sizes the upload plan works with (the defaults above, unless a test shrinks them)."""

    small_max: int = SMALL_MAX
    medium_max: int = MEDIUM_MAX
    chunk_size: int = CHUNK_SIZE
    batch_max_bytes: int = BATCH_MAX_BYTES
    batch_max_blobs: int = BATCH_MAX_BLOBS
    unhashed_min: int = UNHASHED_MIN
    missing_batch: int = MISSING_BATCH


DEFAULT_LIMITS = Limits()


# -- the upload plan --------------------------------------------------------------------


def classify(size: int, limits: Limits | None = None) -> str:
    """``"small"`` (batched), ``"medium"`` (one PUT) or ``"large"`` (resumable)."""
    small_max, medium_max = (limits.small_max, limits.medium_max) if limits else (SMALL_MAX, MEDIUM_MAX)
    if size <= small_max:
        return "small"
    if size <= medium_max:
        return "medium"
    return "large"


def pack_batches(
    items: Sequence[tuple[str, int]], max_bytes: int = BATCH_MAX_BYTES, max_blobs: int = BATCH_MAX_BLOBS
) -> list[list[tuple[str, int]]]:
    """Group ``(digest, size)`` items, in order, into batches of at most
    ``max_blobs`` frames and ``max_bytes`` body bytes (headers included).
    A single item bigger than ``max_bytes`` gets a batch of its own."""
    batches: list[list[tuple[str, int]]] = []
    cur: list[tuple[str, int]] = []
    cur_bytes = 0
    for d, s in items:
        n = framed_size(s)
        if cur and (len(cur) >= max_blobs or cur_bytes + n > max_bytes):
            batches.append(cur)
            cur, cur_bytes = [], 0
        cur.append((d, s))
        cur_bytes += n
    if cur:
        batches.append(cur)
    return batches


def plan_chunks(size: int, offset: int = 0, chunk: int = CHUNK_SIZE) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` half-open ranges covering ``offset..size`` in ``chunk`` steps."""
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} outside 0..{size}")
    return [(start, min(start + chunk, size)) for start in range(offset, size, chunk)]


def next_chunk(size: int, offset: int, chunk: int = CHUNK_SIZE) -> tuple[int, int]:
    """The range a resumable upload sends next from the hub's ``offset``; at the end
    ``(size, size)``: an empty PUT that asks the hub to finish the upload."""
    if offset == size:
        return size, size
    return plan_chunks(size, offset, chunk)[0]  # (ValueError for an offset outside 0..size)


def upload_tasks(blobs: Iterable[tuple[str, int]], limits: Limits = DEFAULT_LIMITS) -> list[tuple[str, Any]]:
    """The uploads for ``(digest, size)`` blobs, in the order they start: large ones
    (``("large", digest)``) then medium ones (``("medium", digest)``), each largest
    first, then the small ones packed into batches (``("batch", [digest, ...])``)."""
    small: list[tuple[str, int]] = []
    medium: list[tuple[str, int]] = []
    large: list[tuple[str, int]] = []
    for d, s in blobs:
        {"small": small, "medium": medium, "large": large}[classify(s, limits)].append((d, s))
    tasks: list[tuple[str, Any]] = [("large", d) for d, _ in sorted(large, key=lambda b: -b[1])]
    tasks += [("medium", d) for d, _ in sorted(medium, key=lambda b: -b[1])]
    tasks += [("batch", [d for d, _ in batch])
              for batch in pack_batches(small, limits.batch_max_bytes, limits.batch_max_blobs)]
    return tasks


def unhashed_candidates(files: Iterable[tuple[str, int]], cached: Iterable[str] | dict[str, str],
                        limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Of ``(path, size)`` files, those that may be uploaded before they are hashed:
    at least ``unhashed_min`` bytes, no cached digest, and a size no other file here
    has (two files of one size may be one content); largest first."""
    unique = dict(files)
    sizes = Counter(unique.values())
    cached = cached if isinstance(cached, dict | set | frozenset) else set(cached)
    return sorted((p for p, size in unique.items()
                   if p not in cached and size >= limits.unhashed_min and sizes[size] == 1),
                  key=lambda p: -unique[p])


def lease_running_out(elapsed: float, lease: float) -> bool:
    """The hub's "you have it" holds for ``lease`` seconds: after most of it, ask again."""
    return elapsed >= LEASE_MARGIN * lease


# -- the commit negotiation -------------------------------------------------------------


class Commit(NamedTuple):
    """Commit the build: by the manifest's digest ``same_as`` if given, and then (if the
    hub knows no build with it, or with no ``same_as``) by the whole manifest when
    ``manifest`` is set. ``expect_missing``: "blobs missing" is an answer, not a failure."""

    same_as: str | None
    manifest: bool
    expect_missing: bool


class LookUpCache(NamedTuple):
    """Plan the paths, look the files up in the hash cache and say what it knew
    (:class:`Cached`)."""


class Upload(NamedTuple):
    """Hash the files, ask which blobs the hub lacks and send those; ``trust``: the
    digests the hash cache knew may be taken as on the hub without asking (the commit
    checks). Say whether any were (:class:`Sent`)."""

    trust: bool


class SendAssumed(NamedTuple):
    """Ask about the digests taken on trust and send those the hub lacks."""


class Done(NamedTuple):
    """Committed; ``result`` is the hub's answer."""

    result: dict


# what the client tells the negotiation


class Committed(NamedTuple):
    result: dict


class UnknownManifest(NamedTuple):
    """The hub knows no build of the space with that manifest digest (and no manifest was sent)."""


class BlobsMissing(NamedTuple):
    """The hub refused the commit: blobs it names were never uploaded."""


class Cached(NamedTuple):
    """Of ``files`` distinct files, the hash cache knew the digests of ``hits``; ``digest``
    is the manifest's digest when it knew them all."""

    hits: int
    files: int
    digest: str | None = None


class Sent(NamedTuple):
    """The uploads are done; ``assumed``: some digests were taken on trust."""

    assumed: bool


Step = Commit | LookUpCache | Upload | SendAssumed | Done
Outcome = Committed | UnknownManifest | BlobsMissing | Cached | Sent


class NegotiationError(RuntimeError):
    """An outcome that does not answer the step asked for (a bug in the driver)."""


class Negotiation:
    """The order of a publish's questions to the hub, as a state machine.

    ``remembered``: the manifest digest this unchanged tree had when it was last
    published from here (the hash cache's tree record), or None; ``published_before``:
    this tree (root, patterns, strip) was published from here before, changed or not.

    The paths, from the cheapest:

    1. a remembered tree: ``Commit(same_as=remembered)``; the hub copies the earlier
       build's files, done. If it knows no such build, go on with 2;
    2. ``LookUpCache``: if the cache knows every file's digest, ``Commit`` by the
       manifest's digest (unless that is the one just refused) with the manifest as
       fallback, blobs missing being an answer; committed, done;
    3. ``Upload`` (trusting the cache's digests when the tree was published before and
       the cache knew some and no commit just said blobs are missing), then ``Commit``
       the manifest; if digests were taken on trust and the hub lacks some:
       ``SendAssumed`` and ``Commit`` again, this time for good.
    """

    def __init__(self, *, remembered: str | None = None, published_before: bool = False) -> None:
        self.remembered = remembered
        self.published_before = published_before
        self._step: Step = (Commit(remembered, manifest=False, expect_missing=False) if remembered is not None
                            else LookUpCache())
        self._trust = False

    def next_step(self) -> Step:
        """What the client does next (the same step until :meth:`handle` is told its outcome)."""
        return self._step

    def handle(self, outcome: Outcome) -> Step:
        """Take the outcome of the current step; return the next one."""
        step = self._step
        if type(outcome) is Committed and type(step) is Commit:
            self._step = Done(outcome.result)
        elif type(step) is Commit and type(outcome) is UnknownManifest and not step.manifest:
            self._step = LookUpCache()  # the remembered tree: the hub has no build with it
        elif type(step) is Commit and type(outcome) is BlobsMissing and step.expect_missing:
            if self._trust:  # after an upload that took some digests on trust
                self._step = SendAssumed()
            else:  # the cache knew every digest, the hub lacks some blobs: ask about all of them
                self._step = Upload(trust=False)
        elif type(step) is LookUpCache and type(outcome) is Cached:
            self._trust = self.published_before and outcome.hits > 0
            if outcome.hits and outcome.hits == outcome.files:
                # by its digest only if that is not the remembered digest just refused
                self._step = Commit(outcome.digest if self.remembered is None else None, manifest=True,
                                    expect_missing=True)
                self._trust = False  # a missing blob here means: ask about everything
            else:
                self._step = Upload(trust=self._trust)
        elif type(step) is Upload and type(outcome) is Sent:
            self._trust = outcome.assumed
            self._step = Commit(None, manifest=True, expect_missing=outcome.assumed)
        elif type(step) is SendAssumed and type(outcome) is Sent:
            self._trust = False
            self._step = Commit(None, manifest=True, expect_missing=False)
        else:
            raise NegotiationError(f"{type(outcome).__name__} does not answer {step!r}")
        return self._step


__all__ = [
    "BATCH_MAX_BLOBS",
    "BATCH_MAX_BYTES",
    "CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "MEDIUM_MAX",
    "MISSING_BATCH",
    "SMALL_MAX",
    "BlobsMissing",
    "Cached",
    "Commit",
    "Committed",
    "Done",
    "Limits",
    "LookUpCache",
    "Negotiation",
    "NegotiationError",
    "SendAssumed",
    "Sent",
    "Upload",
    "UnknownManifest",
    "classify",
    "lease_running_out",
    "next_chunk",
    "pack_batches",
    "plan_chunks",
    "unhashed_candidates",
    "upload_tasks",
]
