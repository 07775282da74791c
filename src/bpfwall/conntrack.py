"""Reading the connection table: the flows `bpfwall conntrack` lists."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import time
from typing import Any

from . import libbpf, shared
from .errors import RuntimeFailure
from .names import PROTOCOL_NAMES
from .scope import Scope

# Linux's clock id; Python's time module does not name it.
CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)


def now_ns() -> int:
    """The data plane's clock (bpf_ktime_get_coarse_ns) as user space reads it."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def read_table(fd: int) -> list[tuple[shared.CtKey, shared.CtEntry]]:
    """Every entry of the pinned LRU hash (batched: one syscall per few thousand flows)."""
    out = []
    batch = 4096
    keys = (shared.CtKey * batch)()
    values = (shared.CtEntry * batch)()
    token = ctypes.c_uint8 * ctypes.sizeof(shared.CtKey)
    in_batch, out_batch = token(), token()
    first = True
    while True:
        n = libbpf.map_lookup_batch(fd, None if first else in_batch, out_batch, keys, values, batch)
        out.extend((shared.CtKey.from_buffer_copy(keys[i]), shared.CtEntry.from_buffer_copy(values[i]))
                   for i in range(n))
        if n < batch:
            return out
        ctypes.memmove(in_batch, out_batch, ctypes.sizeof(token))
        first = False


def _addr(raw, is_ipv6: int) -> str:
    data = bytes(raw)
    return str(ipaddress.IPv6Address(data) if is_ipv6 else ipaddress.IPv4Address(data[:4]))


def flows(scope: Scope) -> dict[str, Any]:
    """The tracked flows, opener first, with state, age and counters."""
    state = scope.require_state()
    ruleset = state.rules()
    if not ruleset.uses_ct():
        return {"tracking": False, "flows": [], "entries": 0}
    fds = scope.open_ct_maps()
    if fds is None:
        raise RuntimeFailure("the connection table is missing from bpffs: re-apply the rules")
    try:
        entries = read_table(fds["conntrack"])
        max_entries = libbpf.map_info(fds["conntrack"]).max_entries
        created = _percpu_sum(fds["ct_stats"], shared.CTS_CREATED)
        invalid = _percpu_sum(fds["ct_stats"], shared.CTS_INVALID)
    finally:
        for fd in fds.values():
            os.close(fd)
    timeouts = ruleset.conntrack.get("timeouts", shared.CT_TIMEOUT_DEFAULTS)
    now = now_ns()
    out = []
    for k, e in entries:
        lo = (_addr(k.addr_lo, k.is_ipv6), k.port_lo)
        hi = (_addr(k.addr_hi, k.is_ipv6), k.port_hi)
        src, dst = (lo, hi) if e.flags & shared.CTF_ORIG_LO else (hi, lo)
        idle = max(0, now - e.last_seen_ns) / 1e9
        expired = idle > _timeout(e, k.proto, timeouts)
        out.append({
            "proto": PROTOCOL_NAMES.get(k.proto, str(k.proto)), "family": 6 if k.is_ipv6 else 4,
            "src": src[0], "sport": src[1], "dst": dst[0], "dport": dst[1],
            "state": "expired" if expired else _state(e, k.proto),
            "age": round(max(0, now - e.created_ns) / 1e9, 1), "idle": round(idle, 1),
            "packets": [e.packets[0], e.packets[1]], "bytes": [e.bytes[0], e.bytes[1]],
        })
    out.sort(key=lambda f: f["age"], reverse=True)
    live = sum(1 for f in out if f["state"] != "expired")
    return {"tracking": True, "flows": out, "entries": len(out), "live": live, "max_entries": max_entries,
            "created": created, "evicted": max(0, created - len(out)), "invalid_packets": invalid}


def _percpu_sum(fd: int, slot: int) -> int:
    values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
    libbpf.map_lookup(fd, ctypes.c_uint32(slot), values)
    return sum(values)


def _timeout(e: shared.CtEntry, proto: int, t: dict[str, int]) -> float:
    if proto == 6:
        return {shared.TCP_ESTABLISHED: t["tcp_established"], shared.TCP_FIN: t["tcp_fin"],
                shared.TCP_TIME_WAIT: t["tcp_fin"], shared.TCP_CLOSE: t["tcp_close"]}.get(e.tcp_state, t["tcp_syn"])
    if proto == 17:
        return t["udp_stream"] if e.flags & shared.CTF_SEEN_REPLY else t["udp"]
    if proto in (1, 58):
        return t["icmp"]
    return t["generic"]


def _state(e: shared.CtEntry, proto: int) -> str:
    if proto == 6:
        return shared.TCP_STATE_NAMES[e.tcp_state] if e.tcp_state < len(shared.TCP_STATE_NAMES) else "?"
    return "replied" if e.flags & shared.CTF_SEEN_REPLY else "unreplied"


def reference_table(scope: Scope, timeouts: dict[str, int]):
    """The live table as the reference model's Conntrack, so `explain` can compare states."""
    from .reference import Conntrack, CtEntry

    ct = Conntrack(timeouts)
    fds = scope.open_ct_maps()
    if fds is None:
        return ct
    try:
        for k, e in read_table(fds["conntrack"]):
            key = (bytes(k.addr_lo), bytes(k.addr_hi), k.port_lo, k.port_hi, k.proto, bool(k.is_ipv6))
            ct.table[key] = CtEntry(
                created=e.created_ns, last_seen=e.last_seen_ns, orig_lo=bool(e.flags & shared.CTF_ORIG_LO),
                tcp_state=e.tcp_state, seen_reply=bool(e.flags & shared.CTF_SEEN_REPLY),
                fin_orig=bool(e.flags & shared.CTF_FIN_ORIG), fin_reply=bool(e.flags & shared.CTF_FIN_REPLY),
                packets=list(e.packets), nbytes=list(e.bytes))
    finally:
        for fd in fds.values():
            os.close(fd)
    return ct
