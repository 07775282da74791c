"""Whether an apply judges connections where the process acts, at connect() and sendmsg().

Rule sets whose egress rules name owners (cgroup, user) get cgroup connect and sendmsg
programs (bpf/sockaddr.h) beside bpfwall_egress, linked to the cgroup2 root. Those
programs run before the kernel picks a route, so they cannot tell by which interface a
connection will leave: they judge only in a namespace where every way out (every
interface but loopback) is one the apply protects, and never a connection to the
namespace's own addresses, which goes over loopback. Elsewhere the egress program alone
judges, packet by packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ifinfo, netns, owners
from .compiler import Compiled, judges_connections


@dataclass
class ConnectScope:
    """Where the hooks judge: the namespace's cookie (0: nowhere) and its own addresses."""

    netns_cookie: int = 0
    local: list[bytes] = field(default_factory=list)
    why_not: str = ""  # when the rule set names owners but connections are not judged


def connect_scope(egress: Compiled | None, protected: list[str], ns: str | None) -> ConnectScope:
    """Where an apply of egress to the interfaces `protected` of namespace ns judges
    connections (the apply's dispatcher has the hooks: it makes an older one anew)."""
    if egress is None or not judges_connections(egress.config):
        return ConnectScope()
    if owners.cgroup2_mount() is None:
        return ConnectScope(why_not="cgroup v2 is not mounted")
    links, local = ifinfo.links_and_addresses(ns)
    open_ways = sorted(set(links) - set(protected))
    if open_ways:
        return ConnectScope(why_not=f"{', '.join(open_ways)} in this namespace is not protected, "
                            "and a connection may leave by it")
    return ConnectScope(netns.cookie(ns), local)
