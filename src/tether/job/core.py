"""The rendezvous state machine of multi-node jobs (sans-IO).

A *group* has *nodes*, each with one *role*. Nodes *send* messages (an id and
``key=value`` data; never blocking), *wait* for one (any node sent the id),
*wait-all* for one (every node, or every node of a role, sent it) and *sync*
(a reusable barrier: every node arrives at the same generation of an id).

Nothing here touches a socket, a database or a clock: the service loads a
:class:`Snapshot`, asks :func:`evaluate` about a wait (passing ``now``) and
stores what :func:`send` and :func:`arrive` decide. The rules:

* Same message id, same data: idempotent. Same id, different data: a
  :class:`Conflict` naming the node and the id. Ids are reusable only by sync.
* Liveness: a node that failed, finished, or was not seen for the group's
  ``lost_after`` can no longer send; a wait that needs it fails at once,
  naming it, instead of running to its timeout. A failed (or lost) node of an
  *essential* role ends the whole group.
* A wait-all names the role it waits for, and waits for every node of that
  role (LAVA's coordinator walked the caller's role and released on the first).

The LAVA coordinator's wire framing (8 hex digits of length, then JSON) is
decoded here too, by :class:`FrameDecoder`, which tolerates any split of the
bytes across reads, a UTF-8 character included.
"""

from __future__ import annotations

import codecs
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_NAME = 128  # message ids, keys, roles, node names
MAX_VALUE = 4096  # bytes of one value (UTF-8)
MAX_KEYS = 64
MAX_MESSAGE = 16384  # bytes of one message's keys and values together
MAX_NODES = 4096


class JobError(Exception):
    """A refusal: ``status`` is the HTTP status it maps to, ``slug`` its problem type;
    the command line exits 2 for bad input, 1 for a conflict or an ended group."""

    status = 400
    slug = "invalid-job-request"

    def __init__(self, detail: str, *, nodes: tuple[str, ...] = ()):
        super().__init__(detail)
        self.detail = detail
        self.nodes = nodes


class Invalid(JobError):
    pass


class Conflict(JobError):
    status = 409
    slug = "job-conflict"


class Ended(JobError):
    status = 409
    slug = "job-ended"


class NodeEnded(JobError):
    """The calling node is done or failed: it takes no further part in its group."""

    status = 409
    slug = "job-node-ended"


# --------------------------------------------------------------------------- validation


def _bad_char(text: str, *, allow_space: bool) -> str | None:
    for ch in text:
        if ch in "=:":
            return f"{ch!r}"
        if ch.isspace() and not (allow_space and ch == " "):
            return "whitespace" if ch == " " else f"the character {ch!r}"
        if unicodedata.category(ch)[0] == "C":
            return f"the control character {ch!r}"
    return None


def check_name(what: str, text: Any) -> str:
    """A message id, key, role or node name: 1-128 characters, no whitespace, ``=``,
    ``:`` or control characters (they would break LAVA's ``node:key=value`` lines)."""
    if not isinstance(text, str) or not text:
        raise Invalid(f"{what} must be a non-empty string")
    if len(text) > MAX_NAME:
        raise Invalid(f"{what} {text[:40]!r}… is longer than {MAX_NAME} characters")
    bad = _bad_char(text, allow_space=False)
    if bad:
        raise Invalid(f"{what} {text!r} contains {bad}; use letters, digits and punctuation "
                      "other than '=' and ':'")
    return text


def check_value(key: str, value: Any) -> str:
    """A value: up to 4 KiB of UTF-8; spaces and ``=`` allowed, no newlines or control characters."""
    if not isinstance(value, str):
        raise Invalid(f"the value of {key!r} must be a string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE:
        raise Invalid(f"the value of {key!r} is longer than {MAX_VALUE} bytes")
    for ch in value:
        if unicodedata.category(ch)[0] == "C":
            raise Invalid(f"the value of {key!r} contains the control character {ch!r}")
    return value


def check_message(data: Any) -> dict[str, str]:
    """The data of a send: a mapping of keys to values, within the size limits."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise Invalid("a message's data must be an object of key: value strings")
    if len(data) > MAX_KEYS:
        raise Invalid(f"a message holds at most {MAX_KEYS} keys, not {len(data)}")
    out = {check_name("key", k): check_value(k, v) for k, v in data.items()}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
    if size > MAX_MESSAGE:
        raise Invalid(f"a message holds at most {MAX_MESSAGE} bytes of keys and values, not {size}")
    return out


def parse_pairs(args: list[str]) -> dict[str, str]:
    """``key=value`` words of the command line (split at the first ``=``)."""
    data: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise Invalid(f"{arg!r} is not key=value")
        data[check_name("key", key)] = check_value(key, value)
    return check_message(data)


def plan_nodes(group: str, roles: list[tuple[str, int]], named: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (node, role) list of a new group: ``named`` nodes as given, then ``count``
    nodes per role named ``GROUP.N`` (N counting on from the named ones), as LAVA
    names the sub-jobs of a multi-node job ``JOB.N``."""
    nodes: dict[str, str] = {}
    for name, role in named:
        check_name("node", name)
        check_name("role", role)
        if name in nodes:
            raise Invalid(f"node {name!r} is named twice")
        nodes[name] = role
    n = 0
    for role, count in roles:
        check_name("role", role)
        if not isinstance(count, int) or count < 1:
            raise Invalid(f"role {role!r} needs at least one node, not {count!r}")
        for _ in range(count):
            while f"{group}.{n}" in nodes:
                n += 1
            nodes[f"{group}.{n}"] = role
            n += 1
    if not nodes:
        raise Invalid("a group needs at least one node: give --role ROLE=COUNT or --node NAME=ROLE")
    if len(nodes) > MAX_NODES:
        raise Invalid(f"a group holds at most {MAX_NODES} nodes, not {len(nodes)}")
    for name in nodes:
        if "/" in name or name in (".", ".."):
            raise Invalid(f"node {name!r} may not contain '/' or be '.' or '..'")
    return list(nodes.items())


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    state: str = "pending"  # pending (not seen yet), joined, done, failed
    reason: str = ""
    last_seen: float | None = None  # seconds (the service's clock)


@dataclass
class Snapshot:
    """One group as the service read it."""

    name: str
    nodes: dict[str, Node]
    state: str = "open"  # open, ended, cancelled
    reason: str = ""
    essential: frozenset[str] = frozenset()
    lost_after: float | None = None  # seconds without a sign of life before a node counts as lost
    deadline: float | None = None  # the group's own timeout
    messages: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # id -> node -> data
    syncs: dict[str, dict[str, int]] = field(default_factory=dict)  # id -> node -> generations reached
    # id -> node -> (the last generation the node was told completed, its last call's token)
    sync_told: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    # The group's role names, when ``nodes`` holds only some of its nodes (the service
    # reads just the ones a decision needs: the caller and the essential roles' nodes).
    role_names: frozenset[str] | None = None

    @property
    def roles(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in self.nodes.values():
            out.setdefault(n.role, []).append(n.name)
        return out


@dataclass(frozen=True)
class WaitAny:
    id: str


@dataclass(frozen=True)
class WaitAll:
    id: str
    role: str | None = None


@dataclass(frozen=True)
class Sync:
    id: str
    generation: int


@dataclass(frozen=True)
class Joined:
    """Every node has shown a sign of life (LAVA's ``group_data``)."""

    id: str = ""


Wait = WaitAny | WaitAll | Sync | Joined


@dataclass(frozen=True)
class Done:
    data: dict[str, dict[str, str]]  # node -> data it sent


@dataclass(frozen=True)
class Pending:
    awaited: tuple[str, ...]  # nodes that can still complete the wait
    recheck_at: float | None  # when one of them would count as lost: look again then


@dataclass(frozen=True)
class Failed:
    reason: str
    nodes: tuple[str, ...]


Outcome = Done | Pending | Failed


def gone(snap: Snapshot, node: Node, now: float) -> str | None:
    """Why ``node`` can no longer send or arrive, or None while it still can."""
    if node.state == "failed":
        return f"{node.name} failed" + (f" ({node.reason})" if node.reason else "")
    if node.state == "done":
        return f"{node.name} finished"
    if snap.lost_after is not None and node.last_seen is not None and now - node.last_seen > snap.lost_after:
        return f"{node.name} was not seen for {now - node.last_seen:.0f} s"
    return None


def _lost_at(snap: Snapshot, nodes: list[Node]) -> float | None:
    if snap.lost_after is None:
        return None
    times = [n.last_seen + snap.lost_after for n in nodes if n.last_seen is not None and n.state in ("pending", "joined")]
    return min(times) if times else None


def group_failure(snap: Snapshot, now: float) -> Failed | None:
    """Whether the group as a whole is over: ended, cancelled, past its deadline,
    or an essential node gone other than by finishing."""
    if snap.state != "open":
        return Failed(f"group {snap.name} is {snap.state}" + (f": {snap.reason}" if snap.reason else ""), ())
    if snap.deadline is not None and now >= snap.deadline:
        return Failed(f"group {snap.name} reached its timeout", ())
    for n in snap.nodes.values():
        if n.role in snap.essential and n.state != "done":
            why = gone(snap, n, now)
            if why:
                return Failed(f"essential role {n.role!r}: {why}; the group has ended", (n.name,))
    return None


def check_role(snap: Snapshot, role: str | None) -> None:
    names = snap.role_names if snap.role_names is not None else snap.roles.keys()
    if role is not None and role not in names:
        raise Invalid(f"group {snap.name} has no role {role!r}; its roles are {', '.join(sorted(names))}")


def evaluate(snap: Snapshot, me: str, wait: Wait, now: float) -> Outcome:
    """Is ``me``'s wait complete, still pending (and on whom), or failed (and why)?
    A pending answer says when to look again without a change: when a node it
    awaits would count as lost, or the group reaches its timeout."""
    out = _evaluate(snap, me, wait, now)
    if isinstance(out, Pending) and snap.deadline is not None:
        at = snap.deadline if out.recheck_at is None else min(out.recheck_at, snap.deadline)
        out = Pending(out.awaited, at)
    return out


def _evaluate(snap: Snapshot, me: str, wait: Wait, now: float) -> Outcome:
    over = group_failure(snap, now)
    if over:
        return over
    if isinstance(wait, WaitAny):
        sent = snap.messages.get(wait.id, {})
        if sent:
            return Done(dict(sent))
        others = [n for n in snap.nodes.values() if n.name != me]
        alive = [n for n in others if not gone(snap, n, now)]
        if not alive:
            names = tuple(n.name for n in others)
            return Failed(f"nobody is left to send {wait.id!r}: "
                          + "; ".join(gone(snap, n, now) or n.name for n in others), names)
        return Pending(tuple(n.name for n in alive), _lost_at(snap, alive))
    if isinstance(wait, WaitAll):
        check_role(snap, wait.role)
        sent = snap.messages.get(wait.id, {})
        expected = [n for n in snap.nodes.values() if wait.role is None or n.role == wait.role]
        missing = [n for n in expected if n.name not in sent]
        if not missing:
            return Done(dict(sent))  # every sender's data, as LAVA answers
        return _missing(snap, missing, f"{wait.id!r}", now)
    if isinstance(wait, Joined):
        missing = [n for n in snap.nodes.values() if n.state == "pending"]
        if not missing:
            return Done({})
        return _missing(snap, missing, "the group to join", now)
    reached = snap.syncs.get(wait.id, {})
    missing = [n for n in snap.nodes.values() if reached.get(n.name, 0) < wait.generation]
    if not missing:
        return Done({})
    return _missing(snap, missing, f"sync {wait.id!r}", now)


def _missing(snap: Snapshot, missing: list[Node], what: str, now: float) -> Outcome:
    lost = [(n, gone(snap, n, now)) for n in missing]
    dead = [(n, why) for n, why in lost if why]
    if dead:
        return Failed(f"{what} cannot complete: " + "; ".join(why for _, why in dead),  # type: ignore[misc]
                      tuple(n.name for n, _ in dead))
    return Pending(tuple(n.name for n in missing), _lost_at(snap, missing))


def send(snap: Snapshot, me: str, msg_id: str, data: Mapping[str, str], now: float) -> bool:
    """May ``me`` send ``msg_id`` with ``data``? True: store it; False: already stored, the same.
    Raises :class:`Conflict` for the same id with other data, :class:`Ended` after the end."""
    check_name("message id", msg_id)
    data = check_message(data)
    over = group_failure(snap, now)
    if over:
        raise Ended(f"cannot send {msg_id!r}: {over.reason}", nodes=over.nodes)
    _still_taking_part(snap, me, f"send {msg_id!r}", now)
    before = snap.messages.get(msg_id, {}).get(me)
    if before is None:
        return True
    if before == data:
        return False
    raise Conflict(f"{me} already sent {msg_id!r} with other data; a message id is sent once "
                   "(reuse ids only with sync)", nodes=(me,))


def _still_taking_part(snap: Snapshot, me: str, what: str, now: float) -> None:
    """Refuse ``what`` from a node that is done, failed or lost (not seen for the group's
    lost_after): the others' waits no longer count on it, so what it sent or reached now
    would arrive after they gave up on it."""
    node = snap.nodes.get(me)
    if node is None:
        return
    if node.state in ("done", "failed"):
        why = f"it already {'finished' if node.state == 'done' else 'failed'}" + (
            f" ({node.reason})" if node.reason else "")
    elif gone(snap, node, now):
        why = (f"it was not seen for {now - node.last_seen:.0f} s (the group's lost_after is "
               f"{snap.lost_after:g} s), so the waits that needed it have failed")
    else:
        return
    raise NodeEnded(f"{me} cannot {what}: {why} and takes no further part in group {snap.name}; nothing was "
                    "stored. Run the step as a node still at work, or in a new group", nodes=(me,))


def arrive(snap: Snapshot, me: str, sync_id: str, generation: int | None, now: float,
           call: str | None = None) -> tuple[int, bool]:
    """``me`` arrives at barrier ``sync_id``: return (the generation it waits for, whether
    its count changes). A call asking again must not arrive twice, so a call is the
    same one when it names its ``generation``, carries the ``call`` token of the last
    arrival, or, without a token, comes before ``me`` was told its last generation
    completed (LAVA's clients poll with identical requests until they are answered)."""
    check_name("sync id", sync_id)
    over = group_failure(snap, now)
    if over:
        raise Ended(f"cannot sync {sync_id!r}: {over.reason}", nodes=over.nodes)
    _still_taking_part(snap, me, f"sync {sync_id!r}", now)
    mine = snap.syncs.get(sync_id, {}).get(me, 0)
    told, last_call = snap.sync_told.get(sync_id, {}).get(me, (0, ""))
    if generation is not None:
        if not 1 <= generation <= mine + 1:
            raise Invalid(f"{me} cannot wait for generation {generation} of sync {sync_id!r}: it reached {mine}")
        return generation, generation == mine + 1
    # A call token decides alone: the hub records "told" after the answer leaves, so a
    # fast node's next call may come first, and must not be taken for the last one.
    if mine and (call == last_call if call is not None else told < mine):
        return mine, False
    return mine + 1, True


# --------------------------------------------------------------------------- LAVA output


def cache_lines(data: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What LAVA writes to /tmp/lava_multi_node_cache.txt: ``node:key=value`` lines."""
    return [f"{node}:{k}={v}" for node, kv in data.items() for k, v in kv.items()]


def group_lines(nodes: Mapping[str, str]) -> str:
    """``lava-group``: a line ``<TAB>node<TAB>role`` per node, as LAVA prints it."""
    return "".join(f"\t{n}\t{r}\n" for n, r in nodes.items())


# --------------------------------------------------------------------------- LAVA framing


class FrameError(Exception):
    """A LAVA coordinator request that cannot be read: the connection gets a nack naming why."""


class FrameDecoder:
    """One LAVA coordinator request: 8 hex digits giving the body's length, then the
    body (JSON). Feed bytes as they come, in any split; :attr:`request` is set when
    the body is complete. The length counts characters, as LAVA's client counts
    ``len(str)``; for the ASCII JSON it sends that is its length in bytes."""

    HEADER = 8

    def __init__(self, max_body: int = 1 << 20):
        self.max_body = max_body
        self._header = b""
        self._length: int | None = None
        self._text: list[str] = []
        self._chars = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.request: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        if self.request is not None:
            if data:
                raise FrameError("more bytes after the body than the length header says")
            return
        if self._length is None:
            need = self.HEADER - len(self._header)
            self._header += data[:need]
            data = data[need:]
            if len(self._header) < self.HEADER:
                return
            text = self._header.decode("ascii", "replace")
            if not all(c in "0123456789abcdefABCDEF" for c in text):
                raise FrameError(f"the length header {text!r} is not 8 hex digits")
            self._length = int(text, 16)
            if self._length > self.max_body:
                raise FrameError(f"a body of {self._length} characters is over the limit of {self.max_body}")
        try:
            chunk = self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise FrameError(f"the body is not UTF-8: {exc.reason}") from None
        self._text.append(chunk)
        self._chars += len(chunk)
        if self._chars > self._length:
            raise FrameError(f"the body is longer than the {self._length} characters its header says")
        if self._chars == self._length:
            self._finish()

    def eof(self) -> None:
        """The peer closed its side: a frame still incomplete is refused."""
        if self.request is None:
            if self._length is None:
                raise FrameError(f"the connection closed after {len(self._header)} of 8 header bytes")
            raise FrameError(f"the connection closed after {self._chars} of the {self._length} "
                             "characters its header promised")

    def _finish(self) -> None:
        try:
            self._utf8.decode(b"", final=True)
            value = json.loads("".join(self._text))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise FrameError(f"the body is JSON but not an object (a {type(value).__name__})")
        self.request = value


def encode_frame(reply: Mapping[str, Any]) -> bytes:
    """A reply as the coordinator frames it: ``%08X`` of the JSON's length, then the JSON."""
    text = json.dumps(reply)  # ASCII (escapes non-ASCII): characters == bytes
    return b"%08X" % len(text) + text.encode("ascii")


# --------------------------------------------------------------------------- lava-network

NETWORK_ID = "network_info"  # the message id lava-network broadcast/collect use
NETWORK_KEYS = ("ipv4", "netmask", "broadcast", "ipv6", "mac", "hostname", "hostname-full", "default-gateway",
                "dns_1", "dns_2", "dns_3")


def network_info(addr: list[dict[str, Any]], routes: list[dict[str, Any]], resolv: str, hostname: str,
                 fqdn: str) -> dict[str, str]:
    """LAVA's network keys from ``ip -j addr show IFACE``, ``ip -j route show default``
    and /etc/resolv.conf (parsed here, so the rules are testable without a network)."""
    import ipaddress

    info = dict.fromkeys(NETWORK_KEYS, "")
    link = addr[0] if addr else {}
    info["mac"] = link.get("address", "")
    for a in link.get("addr_info", []):
        if a.get("family") == "inet" and not info["ipv4"]:
            net = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            info.update(ipv4=a["local"], netmask=str(net.netmask), broadcast=a.get("broadcast", ""))
        elif a.get("family") == "inet6" and not info["ipv6"]:
            info["ipv6"] = a["local"]
    info["default-gateway"] = next((r.get("gateway", "") for r in routes if r.get("gateway")), "")
    servers = [ln.split()[1] for ln in resolv.splitlines() if ln.startswith("nameserver") and len(ln.split()) > 1]
    for i, server in enumerate(servers[:3], 1):
        info[f"dns_{i}"] = server
    info.update(hostname=hostname, **{"hostname-full": fqdn})
    return {k: v for k, v in info.items() if v}


def parse_cache(text: str) -> dict[str, dict[str, str]]:
    """``node:key=value`` lines back into node -> data."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        node, colon, rest = line.partition(":")
        key, eq, value = rest.partition("=")
        if colon and eq:
            out.setdefault(node, {})[key] = value
    return out


def hosts_lines(cache: Mapping[str, Mapping[str, str]], roles: Mapping[str, str] | None = None) -> list[str]:
    """``hosts``: ``IP<TAB>HOSTNAME`` per node with an IPv4 address; with ``roles``
    (``alias-hosts``) a third column, an alias ROLE01, ROLE02, … per role."""
    lines, counts = [], {}
    for node, data in cache.items():
        if not data.get("ipv4"):
            continue
        cols = [data["ipv4"], data.get("hostname") or node]
        if roles is not None:
            role = roles.get(node, "node")
            counts[role] = counts.get(role, 0) + 1
            cols.append(f"{''.join(ch for ch in role.lower() if ch.isalnum())}{counts[role]:02d}")
        lines.append("\t".join(cols))
    return lines
