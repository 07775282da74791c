"""The ban tables: the sources `action: ban` rules banned, and those the port-scan watch banned.

The tables are scope-level LRU hashes pinned beside the log ring, so bans outlive
applies; entries expire by themselves (the data plane deletes a stale one when
it sees it, and `bans` leaves stale ones out). Scan bans have a table of their own,
so that forged scans from many sources cannot push the rules' bans out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Iterator
from ctypes import c_uint32, c_uint64
from typing import Any

from . import libbpf, shared
from .errors import InputError, RuntimeFailure
from .scope import Scope, State

NS = 1_000_000_000


TABLES = ("bans", "scan_bans")


@contextlib.contextmanager
def _maps(scope: Scope) -> Iterator[tuple[list[int], int]]:
    """fds of the scope's ban tables (TABLES) and test clock."""
    fds = scope.open_pinned((*TABLES, "test_clock"))
    if fds is None:
        raise RuntimeFailure("the ban tables are missing from bpffs: re-apply the rules")
    try:
        yield [fds[t] for t in TABLES], fds["test_clock"]
    finally:
        for fd in fds.values():
            os.close(fd)


def clock_ns(clock_fd: int) -> int:
    """The data plane's clock for bans: CLOCK_MONOTONIC, unless a test has fixed it."""
    fixed = c_uint64()
    if libbpf.map_lookup(clock_fd, c_uint32(0), fixed) and fixed.value:
        return fixed.value
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def source_text(src: shared.Source) -> str:
    raw = bytes(src.addr)
    if src.is_ipv6:
        return f"{ipaddress.IPv6Address(raw[:8] + bytes(8))}/64"
    return str(ipaddress.IPv4Address(raw[:4]))


def parse_source(text: str) -> shared.Source:
    """An IPv4 address, or an IPv6 address or /64 (bans cover an IPv6 host's /64)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InputError(f"'{text}' is not an IPv4 or IPv6 address") from None
    src = shared.Source()
    if net.version == 4:
        if net.prefixlen != 32:
            raise InputError(f"'{text}': bans are per IPv4 address, not per network")
        src.addr[:4] = list(net.network_address.packed)
    else:
        if net.prefixlen < 64:
            raise InputError(f"'{text}': bans cover one IPv6 /64; give an address in it")
        src.is_ipv6 = 1
        src.addr[:8] = list(net.network_address.packed[:8])
    return src


def _rule_name(state: State, ban: shared.Ban) -> str | None:
    if ban.reason != shared.BAN_RULE:
        return None
    rules = state.rules().ingress() if state.ruleset else []
    if ban.generation == state.generation and ban.rule < len(rules):
        return rules[ban.rule].name
    return f"rule {ban.rule} of generation {ban.generation}"


def listing(scope: Scope) -> list[dict[str, Any]]:
    """Every ban in force, the longest-running last to expire first."""
    state = scope.require_state()
    out = []
    with _maps(scope) as (fds, clock_fd):
        now = clock_ns(clock_fd)
        for key, ban in (kb for fd in fds for kb in _entries(fd)):
            if ban.expires_ns <= now:
                continue
            out.append({
                "source": source_text(key),
                "family": 6 if key.is_ipv6 else 4,
                "reason": shared.BAN_REASONS.get(ban.reason, str(ban.reason)),
                "rule": _rule_name(state, ban),
                "banned_for": round((now - ban.since_ns) / NS, 1),
                "expires_in": round((ban.expires_ns - now) / NS, 1),
            })
    return sorted(out, key=lambda b: -b["expires_in"])


def _entries(fd: int) -> Iterator[tuple[shared.Source, shared.Ban]]:
    key, nxt = shared.Source(), shared.Source()
    first = True
    while libbpf.map_next_key(fd, None if first else key, nxt):
        first = False
        key = shared.Source.from_buffer_copy(nxt)
        ban = shared.Ban()
        if libbpf.map_lookup(fd, key, ban):
            yield key, ban


def unban(scope: Scope, text: str) -> str:
    """Lifts the ban on a source, by rule and for scans; InputError if it is not banned."""
    src = parse_source(text)
    scope.require_state()
    live = False
    with _maps(scope) as (fds, clock_fd):
        now = clock_ns(clock_fd)
        for fd in fds:
            ban = shared.Ban()
            live |= bool(libbpf.map_lookup(fd, src, ban)) and ban.expires_ns > now
            libbpf.map_delete(fd, src)
    if not live:
        raise InputError(f"{source_text(src)} is not banned")
    return source_text(src)


def is_banned(scope: Scope, address: str, scans: bool = True) -> bool:
    """Whether the source ADDRESS (any address of a banned IPv6 /64) is banned now: by a
    rule, or for a scan (when scans, as the data plane counts those only while it watches
    for scans)."""
    net = ipaddress.ip_address(address)
    src = parse_source(str(ipaddress.ip_network(f"{net}/64", strict=False)) if net.version == 6 else address)
    with _maps(scope) as (fds, clock_fd):
        now = clock_ns(clock_fd)
        for fd in fds if scans else fds[:1]:
            ban = shared.Ban()
            if libbpf.map_lookup(fd, src, ban) and ban.expires_ns > now:
                return True
    return False
