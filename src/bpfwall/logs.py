"""Reading the packet log: the scope's ring buffer, records described for people and for JSON.

A record names its rule by index and generation; the reader names it from the
state while the generation is the one in force, and by number otherwise (a
record written just before an apply). Reading consumes: the ring has one
reader position, as a log file has one end.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import libbpf, names, shared
from .errors import InputError, RuntimeFailure
from .scope import Scope, State

TCP_FLAG_NAMES = [(bit, name) for name, bit in sorted(names.TCP_FLAGS.items(), key=lambda kv: kv[1])]


class Describer:
    """Turns raw records into dicts, with rule and interface names from the state."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.state: State | None = None
        self.rules: dict[str, list[str]] = {}
        self.ifnames: dict[int, str] = {}

    def _refresh(self) -> None:
        self.state = self.scope.read_state()
        ruleset = (self.state.ruleset if self.state else None) or {"rules": []}
        self.rules = {d: [r["name"] for r in ruleset["rules"] if r["direction"] == d] for d in ("ingress", "egress")}
        self.ifnames = {i["ifindex"]: n for n, i in (self.state.interfaces if self.state else {}).items()}

    def describe(self, raw: bytes) -> dict[str, Any]:
        rec = shared.LogRecord.from_buffer_copy(raw.ljust(ctypes.sizeof(shared.LogRecord), b"\0"))
        if self.state is None or rec.generation > self.state.generation:
            self._refresh()
        direction = "egress" if rec.direction else "ingress"
        rules = self.rules.get(direction, [])
        if self.state and rec.generation == self.state.generation and rec.rule < len(rules):
            rule = rules[rec.rule]
        else:
            rule = f"#{rec.rule} of generation {rec.generation}"
        family = socket.AF_INET6 if rec.is_ipv6 else socket.AF_INET
        width = 16 if rec.is_ipv6 else 4
        wall = time.time() - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - rec.time_ns) / 1e9
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(wall, UTC).isoformat(timespec="microseconds"),
            # ifindex 0: refused at connect() or sendmsg(), before any interface (bpf/sockaddr.h)
            "interface": self.ifnames.get(rec.ifindex, "(at the call)" if rec.ifindex == 0 else str(rec.ifindex)),
            "direction": direction,
            "rule": rule,
            "action": shared.ACTION_NAMES.get(rec.action, str(rec.action)),
            "family": 6 if rec.is_ipv6 else 4,
            "proto": names.PROTOCOL_NAMES.get(rec.proto, str(rec.proto)),
            "src": socket.inet_ntop(family, bytes(rec.saddr)[:width]),
            "dst": socket.inet_ntop(family, bytes(rec.daddr)[:width]),
            "length": rec.len,
        }
        if rec.has_l4 and rec.proto in names.PORT_PROTOCOLS:
            out["sport"], out["dport"] = rec.sport, rec.dport
        if rec.has_l4 and rec.proto == names.TCP:
            out["tcp_flags"] = ",".join(n for bit, n in TCP_FLAG_NAMES if rec.tcp_flags & bit)
        if rec.has_l4 and rec.proto in (names.ICMP, names.ICMPV6):
            out["icmp_type"], out["icmp_code"] = rec.icmp_type, rec.icmp_code
        return out


def text(d: dict[str, Any]) -> str:
    """One line, as a firewall log line reads."""
    def ep(addr: str, port_key: str) -> str:
        if port_key not in d:
            return addr
        return names.endpoint(addr, d[port_key], d["family"])

    extra = f" flags {d['tcp_flags']}" if d.get("tcp_flags") else ""
    if "icmp_type" in d:
        extra += f" type {d['icmp_type']} code {d['icmp_code']}"
    return (f"{d['time']} {d['interface']} {d['direction']} {d['action'].upper()} rule {d['rule']}: "
            f"{d['proto']} {ep(d['src'], 'sport')} -> {ep(d['dst'], 'dport')} len {d['length']}{extra}")


JOURNAL_SOCKET = "/run/systemd/journal/socket"


class Journal:
    """Sends records to the systemd journal over its native protocol (KEY=value lines on a
    datagram socket), with the record's fields as BPFWALL_* fields beside the message.

    journald restarts (an upgrade, a crash) make the socket refuse: the journal reconnects
    at the next record, at most once a RETRY_S, and counts the records it could not deliver
    in `undelivered`, saying so in the journal once it is back."""

    RETRY_S = 1.0

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get("BPFWALL_JOURNAL_SOCKET", JOURNAL_SOCKET)
        self.sock: socket.socket | None = None
        self.undelivered = 0  # since the start
        self._unreported = 0  # since the journal last heard of it
        self._next_try = 0.0
        try:
            self._connect()
        except OSError as exc:
            raise RuntimeFailure(f"no journal at {self.path}: {exc.strerror or exc}") from None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def _send(self, fields: dict[str, str]) -> None:
        assert self.sock is not None
        # Values here never hold a newline, so the simple KEY=value form is enough.
        self.sock.send("".join(f"{k}={v}\n" for k, v in fields.items()).encode())

    def send(self, d: dict[str, Any]) -> None:
        fields = {"MESSAGE": text(d), "PRIORITY": "6", "SYSLOG_IDENTIFIER": "bpfwall"}
        fields.update({f"BPFWALL_{k.upper()}": str(v) for k, v in d.items()})
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    if time.monotonic() < self._next_try:
                        break
                    self._connect()
                if self._unreported:
                    self._send({"MESSAGE": f"bpfwall: {self._unreported} log records could not be "
                                f"delivered while the journal was away", "PRIORITY": "4",
                                "SYSLOG_IDENTIFIER": "bpfwall", "BPFWALL_UNDELIVERED": str(self._unreported)})
                    self._unreported = 0
                self._send(fields)
                return
            except OSError:
                # The old socket points at a journald that is gone: a new one may be there.
                self._drop_socket()
                if attempt == 2:
                    self._next_try = time.monotonic() + self.RETRY_S
        self.undelivered += 1
        self._unreported += 1

    def _drop_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self._drop_socket()


def open_log_file(path: str, group: str | None) -> Any:
    """A log file to append JSON lines to: created 0600, or 0640 with the rule file's group,
    as the firewall's own state is. An existing file keeps its owner and mode."""
    from . import access

    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        created = True
    except FileExistsError:
        created = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"--output {path}: cannot open: {exc.strerror}") from None
    except OSError as exc:
        raise InputError(f"--output {path}: cannot create: {exc.strerror}") from None
    if created and group is not None:
        gid = access.group_id(group)
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o640)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def read(scope: Scope, follow: bool, emit: Callable[[dict[str, Any]], None],
         stop: Callable[[], bool] = lambda: False) -> int:
    """Emits every record in the ring; with follow, keeps waiting for more until stop()."""
    path = os.path.join(scope.pin_dir, "log_ring")
    try:
        fd = libbpf.obj_get(path)
    except libbpf.BpfError:
        raise RuntimeFailure("no packet log here: nothing applied (see 'bpfwall apply')") from None
    describer = Describer(scope)
    count = 0

    def on_record(raw: bytes) -> None:
        nonlocal count
        count += 1
        emit(describer.describe(raw))

    ring = libbpf.RingBuffer(fd, on_record)
    try:
        ring.consume()
        while follow and not stop():
            ring.poll(250)
    finally:
        ring.close()
        os.close(fd)
    return count


def held_back(scope: Scope, state: State) -> dict[str, Any]:
    """Per logging rule, the records its limit held back; and records lost to a full ring."""
    ruleset = state.ruleset or {"rules": []}
    out: dict[str, Any] = {"suppressed": {}, "lost": 0}
    ncpus = libbpf.num_possible_cpus()
    for direction in ("ingress", "egress"):
        if not scope.has_direction(state, direction):
            continue
        with scope.open_generation(state, direction) as gen:
            rules = [r for r in ruleset["rules"] if r["direction"] == direction]
            for i, r in enumerate(rules):
                if r.get("log"):
                    st = shared.LogState()
                    libbpf.map_lookup(gen.map_fds["log_state"], ctypes.c_uint32(i), st)
                    out["suppressed"][r["name"]] = st.suppressed
            lost = (ctypes.c_uint64 * ncpus)()
            libbpf.map_lookup(gen.map_fds["log_lost"], ctypes.c_uint32(0), lost)
            out["lost"] += sum(lost)
    return out
