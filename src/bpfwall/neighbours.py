"""The peers a host cannot do without, and whether a spoofed packet could get them banned.

Bans react to SYNs and UDP, which anyone can send with a forged source. A scan forged "from"
the default gateway or a DNS resolver would ban it, and cut the host off. `never_ban` exempts
addresses from every ban; apply and check warn when bans are in use and these peers are not
exempt.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from . import netns
from .ruleset import Ruleset

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def gateways(ns: str | None) -> list[Address]:
    """The default routes' next hops (IPv4 and IPv6) in the namespace."""
    from pyroute2 import IPRoute  # here: a fifth of a second, for rule sets that ban only
    from pyroute2.netlink.exceptions import NetlinkError

    out: list[Address] = []
    with netns.enter(ns), IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                routes = ipr.get_default_routes(family=family)
            except NetlinkError:
                continue
            for route in routes:
                gw = route.get_attr("RTA_GATEWAY")
                if gw:
                    out.append(ipaddress.ip_address(gw.split("%")[0]))
    return out


def resolv_conf(ns: str | None) -> str:
    """The resolver configuration the namespace's processes read (ip netns exec binds
    /etc/netns/NS/resolv.conf over /etc/resolv.conf when there is one)."""
    if ns:
        own = os.path.join("/etc/netns", ns, "resolv.conf")
        if os.path.exists(own):
            return own
    return "/etc/resolv.conf"


def resolvers(path: str) -> list[Address]:
    """The nameservers of a resolv.conf, leaving out local stubs (127.0.0.53, ::1), whose
    traffic never crosses an interface."""
    out: list[Address] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return out
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            if not addr.is_loopback:
                out.append(addr)
    return out


def unexempt(ruleset: Ruleset, ns: str | None) -> list[str]:
    """Warnings, one a peer, for the gateway and resolvers that a ban could touch, when
    the rule set bans at all."""
    if not ruleset.bans_enabled():
        return []
    try:
        peers = [("the default gateway", a) for a in gateways(ns)]
    except OSError as exc:
        return [f"cannot read the default routes to check they are in never_ban: {exc}"]
    peers += [(f"the resolver in {resolv_conf(ns)}", a) for a in resolvers(resolv_conf(ns))]
    seen: set[Address] = set()
    out = []
    for what, addr in peers:
        if addr in seen or ruleset.never_banned(addr):
            continue
        seen.add(addr)
        out.append(f"bans are in use and never_ban does not cover {what}, {addr}: a scan forged "
                   f"from it would ban it; add it to never_ban")
    return out
