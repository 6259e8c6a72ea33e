"""The sandboxes' network policy in nftables: default deny for IPv4 and IPv6, per-instance
grants in named sets, refused attempts counted by kind.

Two layers:

- **In each instance's own network namespace**, a table ``inet <prefix>`` that the app
  cannot change (it has no capability there). Its output chain refuses, in this order
  (deny wins over allow): destinations revoked since the table was made, link-local and
  metadata addresses, the host's addresses, other instances (the pools); then accepts
  what the sets ``g4_<id>``/``g6_<id>`` (address . protocol . port) grant; then refuses
  IPv6 and everything else. Each refusal is counted by kind; TCP gets a reset and the
  rest "administratively prohibited", so an app fails at once instead of timing out.
  The input chain lets in only loopback and replies of granted flows, checked per packet,
  so a revoked flow stops at its next packet in either direction.
- **On the host**, a static table ``inet <prefix>`` (no per-instance state): nothing from
  an instance's veth to the host itself, to another instance or to link-local
  addresses; nothing new into an instance; masquerade for granted traffic that leaves.

Every change is one transaction (libnftables or ``nft -f``): whole or not at all. Sets and
chains are named from the instance id, and live in the instance's namespace, so a reused
address inherits nothing.

A revoke *adds* the destination to the deny sets ``x4_<id>``/``x6_<id>`` (deleting a set
element costs the kernel an RCU grace period, ~10 ms; adding one ~1 ms); the sets are
compacted when they hold more than COMPACT_AFTER revoked entries, and rebuilt at each start.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence

from tether.apps import netns

NFT = "/usr/sbin/nft"
KINDS = ("host", "instance", "link-local", "ipv6", "outside", "revoked")
COMPACT_AFTER = 64
ND = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }"


class PolicyError(Exception):
    """nft refused a transaction; nothing of it was applied."""


def _binding():
    """Debian's python3-nftables (libnftables through ctypes), if installed; else None."""
    try:
        import nftables  # type: ignore

        return nftables
    except ImportError:
        pass
    init = "/usr/lib/python3/dist-packages/nftables/__init__.py"
    if not os.path.exists(init):
        return None
    spec = importlib.util.spec_from_file_location("nftables", init, submodule_search_locations=[os.path.dirname(init)])
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nftables"] = module
    try:
        spec.loader.exec_module(module)
    except OSError:  # libnftables.so.1 missing
        del sys.modules["nftables"]
        return None
    return module


_NFT = _binding()


def run(script: str, ns: str | None = None, *, json_out: bool = False) -> str:
    """Apply ``script`` as one atomic transaction, in namespace ``ns`` (None: the host's)."""

    def call() -> tuple[int, str, str]:
        if _NFT is not None:
            nft = _NFT.Nftables()
            nft.set_json_output(json_out)
            return nft.cmd(script)
        argv = [NFT] + (["-j"] if json_out else []) + ["-f", "-"]
        res = subprocess.run(argv, input=script, capture_output=True, text=True)
        return res.returncode, res.stdout, res.stderr

    if _NFT is None and ns is not None:  # no binding: nsenter runs nft in the namespace
        argv = ["nsenter", f"--net={netns.NETNS_DIR / ns}", NFT] + (["-j"] if json_out else []) + ["-f", "-"]
        res = subprocess.run(argv, input=script, capture_output=True, text=True)
        rc, out, err = res.returncode, res.stdout, res.stderr
    else:
        rc, out, err = netns.run_in(ns, call) if ns else call()
    if rc != 0:
        raise PolicyError(f"nft refused the change (nothing applied): {err.strip()}")
    return out


def host_table(table: str, prefix: str, pool4: ipaddress.IPv4Network, pool6: ipaddress.IPv6Network) -> str:
    """The host's static table, replaced whole (it holds no per-instance state)."""
    t = f"inet {table}"
    w = f'"{prefix}-*"'
    return f"""add table {t}
delete table {t}
table {t} {{
  chain input {{ type filter hook input priority -10; policy accept;
    iifname {w} icmpv6 type {ND} accept
    iifname {w} counter drop
  }}
  chain forward {{ type filter hook forward priority -10; policy accept;
    iifname {w} ip daddr {{ {pool4}, 169.254.0.0/16 }} counter drop
    iifname {w} ip6 daddr {{ {pool6}, fe80::/10 }} counter drop
    oifname {w} ct state established,related accept
    oifname {w} counter drop
  }}
  chain output {{ type filter hook output priority -10; policy accept;
    oifname {w} icmpv6 type {ND} accept
    oifname {w} ct state established,related accept
    oifname {w} counter drop
  }}
  chain postrouting {{ type nat hook postrouting priority 110; policy accept;
    ip saddr {pool4} oifname != {w} masquerade
    ip6 saddr {pool6} oifname != {w} masquerade
  }}
}}
"""


def _counters(instance: str) -> str:
    return "\n".join(f"  counter {k.replace('-', '_')}_{instance} {{ }}" for k in KINDS)


def _elems(items: Iterable[str]) -> str:
    items = sorted(set(items))
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def _tuples(grants: Iterable, version: int) -> list[str]:
    return [f"{g.address} . {g.proto} . {g.port}" for g in grants if g.address.version == version]


def instance_table(table: str, instance: str, link: netns.Link, host_addresses: Sequence,
                   pool4: ipaddress.IPv4Network, pool6: ipaddress.IPv6Network, grants: Iterable,
                   *, fresh: bool = False) -> str:
    """The instance's whole table (run inside its namespace), replacing any older one;
    ``fresh``: the namespace was just made and holds none (deleting a table costs the
    kernel an RCU grace period, ~10 ms)."""
    t = f"inet {table}"
    i = instance
    grants = list(grants)
    h4 = [str(link.host4)] + [str(a) for a in host_addresses if a.version == 4]
    h6 = [str(link.host6)] + [str(a) for a in host_addresses if a.version == 6]
    tup = "type ipv4_addr . inet_proto . inet_service;"
    tup6 = "type ipv6_addr . inet_proto . inet_service;"
    replace = "" if fresh else f"add table {t}\ndelete table {t}\n"
    return replace + f"""table {t} {{
  set g4_{i} {{ {tup}{_elems(_tuples(grants, 4))} }}
  set g6_{i} {{ {tup6}{_elems(_tuples(grants, 6))} }}
  set x4_{i} {{ {tup} }}
  set x6_{i} {{ {tup6} }}
  set host4_{i} {{ type ipv4_addr;{_elems(h4)} }}
  set host6_{i} {{ type ipv6_addr;{_elems(h6)} }}
{_counters(i)}
  chain deny {{
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain out {{ type filter hook output priority 0; policy accept;
    oifname "lo" accept
    icmpv6 type {ND} accept
    ip daddr . meta l4proto . th dport @x4_{i} counter name "revoked_{i}" goto deny
    ip6 daddr . meta l4proto . th dport @x6_{i} counter name "revoked_{i}" goto deny
    ip daddr 169.254.0.0/16 counter name "link_local_{i}" goto deny
    ip6 daddr fe80::/10 counter name "link_local_{i}" goto deny
    ip daddr @host4_{i} counter name "host_{i}" goto deny
    ip6 daddr @host6_{i} counter name "host_{i}" goto deny
    ip daddr {pool4} counter name "instance_{i}" goto deny
    ip6 daddr {pool6} counter name "instance_{i}" goto deny
    ip daddr . meta l4proto . th dport @g4_{i} accept
    ip6 daddr . meta l4proto . th dport @g6_{i} accept
    meta nfproto ipv6 counter name "ipv6_{i}" goto deny
    counter name "outside_{i}" goto deny
  }}
  chain in {{ type filter hook input priority 0; policy drop;
    iifname "lo" accept
    icmpv6 type {ND} accept
    ip saddr . meta l4proto . th sport @x4_{i} goto deny
    ip6 saddr . meta l4proto . th sport @x6_{i} goto deny
    ct state established ip saddr . meta l4proto . th sport @g4_{i} accept
    ct state established ip6 saddr . meta l4proto . th sport @g6_{i} accept
    ct state related meta l4proto {{ icmp, ipv6-icmp }} accept
  }}
}}
"""


def change_grants(table: str, instance: str, old: Sequence, new: Sequence, revoked: Sequence) -> str:
    """One transaction from grants ``old`` (with ``revoked`` already in the deny sets) to
    ``new``: added ones join the grant sets (and leave the deny sets if revoked before);
    removed ones join the deny sets."""
    t = f"inet {table}"
    i = instance
    added = [g for g in new if g not in old]
    removed = [g for g in old if g not in new]
    back = [g for g in added if g in revoked]
    lines = []
    for v in (4, 6):
        if items := _tuples(back, v):
            lines.append(f"delete element {t} x{v}_{i} {{ {', '.join(items)} }}")
        if items := _tuples([g for g in added if g not in revoked], v):
            lines.append(f"add element {t} g{v}_{i} {{ {', '.join(items)} }}")
        if items := _tuples(removed, v):
            lines.append(f"add element {t} x{v}_{i} {{ {', '.join(items)} }}")
    return "\n".join(lines) + "\n" if lines else ""


def plan(table: str, instance: str, old: Sequence, revoked: Sequence, new: Sequence) -> tuple[str, list, list]:
    """What ``set_grants(new)`` does to the sets: (the transaction, the destinations then
    revoked but still in the sets, those removed by this change)."""
    removed = [g for g in old if g not in new]
    after = [g for g in revoked if g not in new] + removed
    return change_grants(table, instance, old, new, revoked), after, removed


def compact(table: str, instance: str, revoked: Sequence) -> str:
    """Drop revoked destinations from both the grant and the deny sets, in one transaction."""
    t = f"inet {table}"
    lines = []
    for v in (4, 6):
        if items := _tuples(revoked, v):
            joined = ", ".join(items)
            lines += [f"delete element {t} g{v}_{instance} {{ {joined} }}",
                      f"delete element {t} x{v}_{instance} {{ {joined} }}"]
    return "\n".join(lines) + "\n" if lines else ""


def counters(table: str, ns: str) -> dict[str, int]:
    """Refused attempts (packets) by kind, from the instance's table in namespace ``ns``."""
    out = {k: 0 for k in KINDS}
    by_name = {k.replace("-", "_"): k for k in KINDS}
    try:
        text = run(f"list counters table inet {table}\n", ns, json_out=True)
    except (PolicyError, OSError):
        return out
    for item in json.loads(text or "{}").get("nftables", []):
        c = item.get("counter")
        if c:
            kind = by_name.get(c["name"].rsplit("_", 1)[0])
            if kind:
                out[kind] += c.get("packets", 0)
    return out


def reset_counters(table: str, ns: str) -> None:
    """Zero the refusal counters (after the self-test, whose probes are not the app's)."""
    run(f"reset counters table inet {table}\n", ns)


def has_table(table: str, ns: str | None = None) -> bool:
    try:
        run(f"list table inet {table}\n", ns)
        return True
    except (PolicyError, OSError):
        return False


def delete_table(table: str, ns: str | None = None) -> None:
    if has_table(table, ns):
        run(f"delete table inet {table}\n", ns)
