"""Protocol, ICMP and TCP flag names of the rule language (nftables' spellings), and the
system's protocol and service tables (/etc/protocols, /etc/services) behind them."""

from __future__ import annotations

import functools
import socket

PROTOCOLS = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
PORT_PROTOCOLS = {6, 17, 132}


@functools.cache
def protocol_number(name: str) -> int | None:
    """A protocol by nftables' name, else by the system's name or alias (ipv6-icmp, IPv6-ICMP,
    ospf, vrrp...); None if neither knows it."""
    key = name.strip().lower()
    if key in PROTOCOLS:
        return PROTOCOLS[key]
    for candidate in (name.strip(), key, key.upper()):
        try:
            return socket.getprotobyname(candidate)
        except OSError:
            continue
    return None


@functools.cache
def service_port(name: str, protos: tuple[int, ...] = ()) -> tuple[int | None, str | None]:
    """The port of a service name (ssh, http, domain...) in the system's services table, for
    the given port-carrying protocols (all of tcp, udp, sctp when none are given).
    Returns (port, None), or (None, why)."""
    wanted = [PROTOCOL_NAMES[p] for p in (protos or (6, 17, 132)) if p in PORT_PROTOCOLS]
    found: dict[str, int] = {}
    for proto in wanted:
        try:
            found[proto] = socket.getservbyname(name.strip(), proto)
        except OSError:
            continue
    if not found:
        return None, f"unknown service '{name}' (not in the system's services table)"
    if len(set(found.values())) > 1:
        per = ", ".join(f"{p} {n}" for p, n in found.items())
        return None, f"service '{name}' has different ports per protocol ({per}): give the number"
    return next(iter(found.values())), None
ICMP, ICMPV6, TCP = 1, 58, 6

ICMP_TYPES = {
    "echo-reply": 0,
    "destination-unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo-request": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
    "info-request": 15,
    "info-reply": 16,
    "address-mask-request": 17,
    "address-mask-reply": 18,
}
ICMPV6_TYPES = {
    "destination-unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo-request": 128,
    "echo-reply": 129,
    "mld-listener-query": 130,
    "mld-listener-report": 131,
    "mld-listener-done": 132,
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
    "router-renumbering": 138,
    "ind-neighbor-solicit": 141,
    "ind-neighbor-advert": 142,
    "mld2-listener-report": 143,
}
ICMP_CODES = {
    "net-unreachable": 0,
    "host-unreachable": 1,
    "prot-unreachable": 2,
    "port-unreachable": 3,
    "frag-needed": 4,
    "net-prohibited": 9,
    "host-prohibited": 10,
    "admin-prohibited": 13,
}
ICMPV6_CODES = {
    "no-route": 0,
    "admin-prohibited": 1,
    "addr-unreachable": 3,
    "port-unreachable": 4,
    "policy-fail": 5,
    "reject-route": 6,
}
TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ece": 0x40, "cwr": 0x80}

# Accepted on ingress after every rule and before the policy, so that a
# default-drop policy never cuts IPv6 neighbour discovery or path MTU discovery.
ESSENTIAL_ICMPV6_TYPES = (2, 133, 134, 135, 136)


def endpoint(addr: str, port: int, family: int) -> str:
    """addr:port as people write it: an IPv6 address in brackets."""
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"
