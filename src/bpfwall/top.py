"""`bpfwall top`: a live view of the busiest rules, the top dropped sources and ports, and rates.

While it runs it renews a lease (drop_stats_until, a CLOCK_MONOTONIC deadline) in the
generation in force, again after an apply, and the data plane counts drops by port and
samples them by source until the lease runs out. Nothing is switched off at exit: a top
killed by any signal stops costing the data plane within LEASE_MIN_S, and one top's exit
never stops the statistics under another.
"""

from __future__ import annotations

import ctypes
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table

from . import libbpf, shared, stats
from .generation import Generation
from .scope import Scope


@dataclass
class Snapshot:
    at: float
    data: dict[str, Any]
    ports: dict[int, int] = field(default_factory=dict)  # dropped packets by destination port
    sources: dict[str, int] = field(default_factory=dict)  # dropped packets by source (estimated)


LEASE_MIN_S = 2.0
LEASE_INTERVALS = 3  # a lease outlasts this many refreshes, so a slow one never lets it lapse


def lease_seconds(interval: float) -> float:
    return max(LEASE_MIN_S, LEASE_INTERVALS * interval)


def renew(gen: Generation, seconds: float) -> None:
    """Moves the generation's drop-statistics lease to now + seconds, never back: another
    top's longer lease stands."""
    until = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + int(seconds * 1e9)
    fd = gen.map_fds["drop_stats_until"]
    cur = ctypes.c_uint64()
    libbpf.map_lookup(fd, ctypes.c_uint32(0), cur)
    if cur.value < until:
        libbpf.map_update(fd, ctypes.c_uint32(0), ctypes.c_uint64(until))


def _ports(gen: Generation) -> dict[int, int]:
    n = shared.PORT_SLOTS
    keys = (ctypes.c_uint32 * n)()
    values = (ctypes.c_uint64 * n)()
    got = libbpf.map_lookup_batch(gen.map_fds["drop_ports"], None, ctypes.byref(ctypes.c_uint32()), keys, values, n)
    return {keys[i]: values[i] for i in range(got) if values[i]}


def _sources(gen: Generation) -> dict[str, int]:
    out: dict[str, int] = {}
    fd = gen.map_fds["drop_sources"]
    key, nxt, value = None, shared.DropSource(), ctypes.c_uint64()
    while libbpf.map_next_key(fd, key, nxt):
        if libbpf.map_lookup(fd, nxt, value):
            raw = bytes(nxt.addr)
            addr = socket.inet_ntop(socket.AF_INET6, raw) if nxt.is_ipv6 else socket.inet_ntop(socket.AF_INET,
                                                                                                   raw[:4])
            out[addr] = out.get(addr, 0) + value.value * shared.DROP_SOURCE_SAMPLE
        key, nxt = nxt, shared.DropSource()
    return out


def snapshot(scope: Scope, lease: float = LEASE_MIN_S) -> Snapshot:
    """The counters now; renews the drop-statistics lease for lease seconds."""
    state = scope.require_state()
    snap = Snapshot(time.monotonic(), stats.collect(scope))
    for direction in ("ingress", "egress"):
        if scope.has_direction(state, direction):
            with scope.open_generation(state, direction) as gen:
                renew(gen, lease)
                for port, n in _ports(gen).items():
                    snap.ports[port] = snap.ports.get(port, 0) + n
                for addr, n in _sources(gen).items():
                    snap.sources[addr] = snap.sources.get(addr, 0) + n
    return snap


def _rate(now: int, before: int | None, dt: float) -> str:
    if before is None or dt <= 0:
        return "-"
    return f"{max(0, now - before) / dt:,.0f}"


def render(cur: Snapshot, prev: Snapshot | None, rows: int = 10) -> Group:
    dt = cur.at - prev.at if prev else 0.0
    data = cur.data
    old_rules = {(r["name"], r["direction"]): r["packets"] for r in prev.data["rules"]} if prev else {}
    busiest = sorted(data["rules"], key=lambda r: (r["packets"] - old_rules.get((r["name"], r["direction"]), 0),
                                                   r["packets"]), reverse=True)[:rows]
    rules = Table("rule", "dir", "action", "pps", "packets", "bytes", title="busiest rules", expand=True)
    for r in busiest:
        before = old_rules.get((r["name"], r["direction"])) if prev else None
        rules.add_row(r["name"], r["direction"], r["action"], _rate(r["packets"], before, dt),
                      f"{r['packets']:,}", f"{r['bytes']:,}")
    sources = Table("source", "dropped/s", "dropped (est.)", title="top dropped sources (sampled)", expand=True)
    for addr, n in sorted(cur.sources.items(), key=lambda kv: kv[1], reverse=True)[:rows]:
        sources.add_row(addr, _rate(n, prev.sources.get(addr, 0) if prev else None, dt), f"{n:,}")
    ports = Table("port", "dropped/s", "dropped", title="top dropped ports", expand=True)
    for port, n in sorted(cur.ports.items(), key=lambda kv: kv[1], reverse=True)[:rows]:
        label = "(none)" if port == shared.PORT_ABSENT else str(port)
        ports.add_row(label, _rate(n, prev.ports.get(port, 0) if prev else None, dt), f"{n:,}")
    drops = data["drops"]
    total = sum(drops.values())
    before_total = sum(prev.data["drops"].values()) if prev else None
    head = (f"bpfwall on {', '.join(data['interfaces'])} (generation {data['generation']}): "
            f"drops {total:,} ({_rate(total, before_total, dt)}/s): rules {drops['rule']:,}, "
            f"policy {drops['policy']:,}, malformed {drops['malformed']:,}")
    return Group(head, rules, sources, ports)
