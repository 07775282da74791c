"""Would this rule set cut the operator's own SSH session?

The sessions come from SSH_CONNECTION (the session `bpfwall` runs in) and from the
established connections of listening sshd sockets (every session on the host). Each
is judged by the reference model as the next packet of the connection in both
directions: the client's ACK arriving, and the server's answer leaving.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from dataclasses import dataclass

from . import names, packets, reference
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


_ENDPOINT = re.compile(r"^(?P<addr>.+):(?P<port>\d+|\*)$")


def _ss(args: list[str]) -> list[dict[str, str]]:
    """ss's sockets as {local, lport, peer, pport, users}. The columns before the
    addresses vary (a State column only without a state filter): the first two
    ADDR:PORT tokens are the two ends."""
    try:
        run = subprocess.run(["ss", "-Htn", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in run.stdout.splitlines():
        ends = [m for t in line.split() if (m := _ENDPOINT.match(t))]
        if len(ends) >= 2:
            found.append({"local": ends[0]["addr"], "lport": ends[0]["port"], "peer": ends[1]["addr"],
                          "pport": ends[1]["port"], "users": line.partition("users:")[2]})
    return found


def from_sshd() -> list[Session]:
    """Established connections on the ports that sshd processes listen on (of the
    current network namespace; ss needs root to see other users' processes)."""
    ports = {int(m["lport"]) for m in _ss(["-lp"]) if '"sshd' in m["users"]}
    sessions = []
    for m in _ss(["state", "established"]):
        if int(m["lport"]) in ports:
            local, peer = m["local"].strip("[]").split("%")[0], m["peer"].strip("[]").split("%")[0]
            try:
                client, server = ipaddress.ip_address(peer), ipaddress.ip_address(local)
            except ValueError:
                continue
            sessions.append(Session(str(_unmapped(client)), int(m["pport"]), str(_unmapped(server)),
                                    int(m["lport"]), "sshd connection"))
    return sessions


def arriving_interface(session: Session) -> str | None:
    """The interface the client's packets come in on: the route back to it."""
    try:
        run = subprocess.run(["ip", "-j", "route", "get", session.client], capture_output=True, text=True,
                             timeout=10)
        routes = json.loads(run.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return routes[0].get("dev") if routes else None


def threats(ruleset: Ruleset, sessions: list[Session], interfaces: list[str] | None,
            ct: reference.Conntrack | None, now: int = 0) -> list[Threat]:
    """The sessions the rule set would cut, on the interfaces it is applied to (None:
    any interface, as `check` does not know them). ct: the connection table the rule
    set will see; None takes each session as a tracked, established connection."""
    found = []
    for s in dict.fromkeys(sessions):
        iface = arriving_interface(s)
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
