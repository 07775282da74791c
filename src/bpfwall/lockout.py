"""Would this rule set cut the operator's own SSH session?

The sessions come from SSH_CONNECTION (the session `bpfwall` runs in) and from the kernel:
the established TCP connections (the kernel's socket tables in /proc) that an sshd
process holds or that arrived on a port an sshd listens on, so a socket-activated sshd is
found too. Routes come from netlink as well. Where the kernel cannot be asked, LookupFailed:
the guard says so rather than guard nothing. Each session is judged by the reference model
as the next packet of the connection in both directions: the client's ACK arriving, and
the server's answer leaving.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import faults, names, packets, reference
from .errors import RuntimeFailure
from .ruleset import Ruleset

TCP_ACK = 0x10
TCP_PSH = 0x08


@dataclass(frozen=True)
class Session:
    client: str
    client_port: int
    server: str
    server_port: int
    source: str  # where it was found, for the message

    def __str__(self) -> str:
        return f"{_host(self.client)}:{self.client_port} -> {_host(self.server)}:{self.server_port} ({self.source})"


@dataclass(frozen=True)
class Threat:
    session: Session
    interface: str | None
    direction: str
    decision: reference.Decision

    def __str__(self) -> str:
        d = self.decision
        by = f"rule '{d.reason}'" if d.kind == "rule" else f"the {self.direction} policy"
        where = f" on {self.interface}" if self.interface else ""
        what = "its packets in" if self.direction == "ingress" else "its answers out"
        return f"SSH session {self.session}: {what}{where} would be dropped by {by}"


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def from_environment(env: dict[str, str]) -> list[Session]:
    """SSH_CONNECTION="client_ip client_port server_ip server_port", if well formed."""
    parts = env.get("SSH_CONNECTION", "").split()
    if len(parts) != 4:
        return []
    try:
        client, server = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[2])
        cport, sport = int(parts[1]), int(parts[3])
    except ValueError:
        return []
    if client.version != server.version:
        return []
    return [Session(str(_unmapped(client)), cport, str(_unmapped(server)), sport, "SSH_CONNECTION")]


def _unmapped(addr: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """An IPv4 peer of a dual-stack socket shows as ::ffff:a.b.c.d; on the wire it is IPv4."""
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


TCP_ESTABLISHED, TCP_LISTEN = 1, 10
SSHD_PREFIX = "sshd"  # sshd, and OpenSSH 9.8's sshd-session and sshd-auth


class LookupFailed(Exception):
    """The sessions could not be looked for: the guard cannot say the rules are safe."""


def _tcp_sockets() -> list[dict[str, Any]]:
    """The TCP sockets of the current network namespace that listen or are established,
    with their inodes, from the kernel's socket tables in /proc (this thread's namespace).

    Read from procfs rather than sock_diag: the netlink library takes a fifth of a second
    to import, which every apply would pay though most find no session at all."""
    faults.fail_point("lockout-lookup")
    out = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            if family == socket.AF_INET6:
                continue  # IPv6 off in this kernel: no IPv6 sockets to find
            raise
        for line in lines:
            fields = line.split()
            state = int(fields[3], 16)
            if state not in (TCP_ESTABLISHED, TCP_LISTEN):
                continue
            local, lport = _proc_endpoint(fields[1], family)
            peer, pport = _proc_endpoint(fields[2], family)
            out.append({"state": state, "local": local, "lport": lport, "peer": peer, "pport": pport,
                        "inode": int(fields[9])})
    return out


def _proc_endpoint(text: str, family: int) -> tuple[str, int]:
    """ADDR:PORT as /proc/net/tcp writes them: the address as 32-bit words in hex, each in the
    host's byte order; the port in hex."""
    addr, port = text.split(":")
    raw = b"".join(int(addr[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(addr), 8))
    return socket.inet_ntop(family, raw), int(port, 16)


def _socket_owners(inodes: set[int]) -> dict[int, str]:
    """inode -> the name (comm) of a process holding that socket, from /proc."""
    owners: dict[int, str] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
        except OSError:
            continue  # gone, or not ours to read
        held = [wanted[link] for link in links if link in wanted]
        if held:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            for inode in held:
                if not owners.get(inode, "").startswith(SSHD_PREFIX):
                    owners[inode] = comm
    return owners


def from_sshd() -> list[Session]:
    """The SSH sessions of the current network namespace: established TCP connections held by
    an sshd process (a socket-activated sshd too, whose listener systemd holds), or on a port an
    sshd listens on. Raises LookupFailed when the kernel cannot be asked."""
    try:
        socks = _tcp_sockets()
        owners = _socket_owners({s["inode"] for s in socks})
    except (OSError, ImportError) as exc:
        raise LookupFailed(f"the TCP sockets in /proc: {exc}") from None
    except (ValueError, IndexError) as exc:  # a line of a format this code does not know
        raise LookupFailed(f"the TCP sockets in /proc: {exc}") from None
    listening = {s["lport"] for s in socks if s["state"] == TCP_LISTEN}
    sshd_ports = {s["lport"] for s in socks
                  if s["state"] == TCP_LISTEN and owners.get(s["inode"], "").startswith(SSHD_PREFIX)}
    sessions = []
    for s in socks:
        if s["state"] != TCP_ESTABLISHED:
            continue
        held_by_sshd = owners.get(s["inode"], "").startswith(SSHD_PREFIX)
        # A session arrived on a listening port: one sshd listens on, or (socket activation:
        # systemd listens) one whose connection an sshd holds. An sshd's connection from a
        # port nobody listens on is one it opened (a forwarding), not a session.
        if not (s["lport"] in sshd_ports or (held_by_sshd and s["lport"] in listening)):
            continue
        try:
            client, server = ipaddress.ip_address(s["peer"]), ipaddress.ip_address(s["local"])
        except ValueError:
            continue
        sessions.append(Session(str(_unmapped(client)), s["pport"], str(_unmapped(server)), s["lport"],
                                "sshd connection"))
    return sessions


def arriving_interfaces(sessions: list[Session]) -> dict[Session, str | None]:
    """The interface each client's packets come in on: the route back to it, from netlink
    (one socket for all). Raises LookupFailed when the kernel cannot be asked."""
    out: dict[Session, str | None] = {}
    if not sessions:
        return out
    from pyroute2 import IPRoute  # here: a fifth of a second to import, for hosts with sessions
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            for session in dict.fromkeys(sessions):
                out[session] = None
                try:
                    routes = ipr.route("get", dst=session.client)
                except NetlinkError as exc:
                    if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                        continue  # no way back to it from here: it does not arrive here
                    raise
                oif = routes[0].get_attr("RTA_OIF") if routes else None
                links = ipr.get_links(oif) if oif is not None else []
                out[session] = links[0].get_attr("IFLA_IFNAME") if links else None
    except Exception as exc:  # NetlinkError (no route: the session cannot be live), OSError
        raise LookupFailed(f"routes back to the SSH clients over netlink: {exc}") from None
    return out


def threats(ruleset: Ruleset, sessions: list[Session], interfaces: list[str] | None,
            ct: reference.Conntrack | None, now: int = 0,
            arriving: dict[Session, str | None] | None = None) -> list[Threat]:
    """The sessions the rule set would cut, on the interfaces it is applied to (None:
    any interface, as `check` does not know them). ct: the connection table the rule
    set will see; None takes each session as a tracked, established connection.
    arriving: arriving_interfaces(sessions), if the caller has it."""
    if arriving is None:
        arriving = arriving_interfaces(sessions)
    found = []
    for s in dict.fromkeys(sessions):
        iface = arriving.get(s)
        if interfaces is not None and iface not in interfaces:
            continue  # it does not come through the firewall
        table, at = (ct, now) if ct is not None else (_tracked(s), 1)
        inbound = packets.build(names.TCP, s.client, s.server, s.client_port, s.server_port, TCP_ACK | TCP_PSH)
        outbound = packets.build(names.TCP, s.server, s.client, s.server_port, s.client_port, TCP_ACK | TCP_PSH)
        for direction, frame in (("ingress", inbound), ("egress", outbound)):
            d = reference.decide(ruleset, frame, iface, direction, ct=table, now=at, learn=False)
            if d.action != "accept":
                found.append(Threat(s, iface, direction, d))
                break
    return found


def _tracked(s: Session) -> reference.Conntrack:
    """A table in which the session is an established connection."""
    ct = reference.Conntrack()
    steps = ((s.client, s.server, s.client_port, s.server_port, 0x02),
             (s.server, s.client, s.server_port, s.client_port, 0x12),
             (s.client, s.server, s.client_port, s.server_port, TCP_ACK))
    for src, dst, sport, dport, flags in steps:
        pkt = reference.parse(packets.build(names.TCP, src, dst, sport, dport, flags))
        ct.accepted(pkt, ct.state_of(pkt, 1), 1)
    return ct


APPLY_ADVICE = ("apply with --force to go ahead without the lockout guard (with --confirm SECS to get the old "
                "rules back if you lose the session)")


SET_ADVICE = "run it again with --force to go ahead without the lockout guard"


def sessions_here() -> list[Session]:
    """The SSH sessions of this host (the caller's own, and sshd's); LookupFailed when they
    cannot be looked for."""
    return from_environment(dict(os.environ)) + from_sshd()


def guard_apply(ruleset: Ruleset, targets: list[str], ct: Callable[[], reference.Conntrack] | None,
                now: int, advice: str = APPLY_ADVICE, doing: str = "apply") -> None:
    """What apply runs first, in the scope's namespace: RuntimeFailure naming every SSH
    session of this host that the rule set would cut on the targets, or saying that the
    sessions could not be looked for. ct gives the live connection table as the reference
    model takes it (None: the rule set tracks nothing). advice: how to go ahead anyway."""
    try:
        sessions = sessions_here()
        if not sessions:
            return
        found = threats(ruleset, sessions, targets, ct() if ct else None, now)
    except LookupFailed as exc:
        raise RuntimeFailure(f"refusing to {doing}: cannot look for SSH sessions the rules might cut ({exc})\n"
                             f"{advice}") from None
    if found:
        raise RuntimeFailure(f"refusing to {doing}: it would lock out SSH\n" + "\n".join(str(t) for t in found)
                             + f"\nadd a rule that accepts it, or {advice}")


def check_warnings(ruleset: Ruleset) -> list[str]:
    """SSH sessions of this host the rule set would cut: what apply refuses, check warns of.
    check has no connection table to go by, so a session is judged twice: as a tracked
    connection (a re-apply while tracking runs), and, with rules that match connection
    state, untracked, as a first apply finds it (the table starts empty)."""
    try:
        sessions = from_environment(dict(os.environ)) + from_sshd()
        arriving = arriving_interfaces(sessions)
        interfaces = ruleset.interfaces or None
        tracked = threats(ruleset, sessions, interfaces, None, arriving=arriving)
        found = [str(t) for t in tracked]
        if ruleset.uses_ct():
            cut = {t.session for t in tracked}
            empty = reference.Conntrack(ruleset.conntrack.get("timeouts", {}))
            found += [f"{t} when bpfwall's connection tracking is not running yet (a first apply)"
                      for t in threats(ruleset, sessions, interfaces, empty, 1, arriving) if t.session not in cut]
    except LookupFailed as exc:
        return [f"cannot look for SSH sessions the rules might cut ({exc}); apply will refuse without --force"]
    return found


def guard_scope(scope: Any, ruleset: Ruleset, targets: list[str], advice: str = APPLY_ADVICE,
                doing: str = "apply") -> None:
    """guard_apply for an apply in scope (a scope.Scope): in its namespace, against its live
    connection table when the rule set tracks connections."""
    from . import conntrack, netns

    def live_table() -> reference.Conntrack:
        return conntrack.reference_table(scope, ruleset.conntrack.get("timeouts", {}))

    with netns.enter(scope.ns):
        guard_apply(ruleset, targets, live_table if ruleset.uses_ct() else None, conntrack.now_ns(), advice, doing)
