"""The rule sets the benchmarks run, written for bpfwall, nftables and iptables alike.

Service rules: rule i accepts TCP port 1000+i from its own /24 (10.x.y.0/24),
the shape of a host's allow list. The flood variants end with the rule that
drops the flood (UDP to port 9), so every flood packet walks past the rest.
"""

from __future__ import annotations

import random

from ..cidrset import CidrSet
from ..ruleset import Rule, Ruleset

FLOOD_PORT = 9


def rule_source(i: int) -> str:
    return f"10.{i >> 8}.{i & 255}.5"


def _net(i: int) -> str:
    return f"10.{i >> 8}.{i & 255}.0/24"


def _services(n: int, changed: int | None = None):
    """(i, source network, port) of the n service rules; rule `changed` gets port 999."""
    for i in range(n):
        yield i, _net(i), (1000 + i if i != changed else 999)


def service_rules(n: int, changed: int | None = None) -> str:
    """n service rules, policy drop. changed: the index of one rule given another port."""
    lines = ["version: 1", "policy: {ingress: drop}", "rules:"]
    lines += [f"  - {{name: r{i}, proto: tcp, dport: {port}, src: {net}, action: accept}}"
              for i, net, port in _services(n, changed)]
    return "\n".join(lines) + "\n"


def flood_rules(n: int) -> str:
    """n-1 service rules, then the rule that drops the flood; policy accept."""
    lines = ["version: 1", "policy: {ingress: accept}", "rules:"]
    lines += [f"  - {{name: r{i}, proto: tcp, dport: {port}, src: {net}, action: accept}}"
              for i, net, port in _services(n - 1)]
    lines.append(f"  - {{name: flood, proto: udp, dport: {FLOOD_PORT}, action: drop}}")
    return "\n".join(lines) + "\n"


def nft_rules(n: int, hook: str, device: str = "", changed: int | None = None, flood: bool = True,
              as_map: bool = False, sets: tuple[str, ...] = (), first: tuple[str, ...] = ()) -> str:
    """The same rules for nftables: hook 'netdev' (ingress of device) or 'inet' (input).
    as_map: the service rules as an nft expert writes them for speed, one lookup in a
    concatenated interval map of (source . port) to verdict, instead of a rule each (which
    `nft replace rule` needs, for the control-plane benchmark). sets: more declarations in
    the table (nft_interval_set()); first: statements before the service rules."""
    family = "netdev" if hook == "netdev" else "inet"
    chain = (f"type filter hook ingress device {device} priority 0; policy accept;" if hook == "netdev"
             else "type filter hook input priority 0; policy accept;")
    services = list(_services(n - flood, changed))
    lines = [f"table {family} bwbench {{", *sets]
    if as_map:
        lines += ["  map services {", "    type ipv4_addr . inet_service : verdict; flags interval;"]
        if services:
            lines.append("    elements = { " + ", ".join(f"{net} . {port} : accept" for _, net, port in services)
                         + " }")
        lines.append("  }")
    lines += ["  chain c {", f"    {chain}", *(f"    {statement}" for statement in first)]
    if as_map:
        lines.append("    ip saddr . tcp dport vmap @services")
    else:
        lines += [f"    ip saddr {net} tcp dport {port} accept" for _, net, port in services]
    if flood:
        lines.append(f"    udp dport {FLOOD_PORT} counter drop")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def iptables_rules(n: int, changed: int | None = None, flood: bool = True) -> str:
    """The same rules for iptables-restore (filter table, INPUT chain)."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f"-A INPUT -s {net} -p tcp --dport {port} -j ACCEPT" for _, net, port in _services(n - flood, changed)]
    if flood:
        lines.append(f"-A INPUT -p udp --dport {FLOOD_PORT} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def blocklist_elements(rnd: random.Random, size: int, ipv6_share: float = 0.1) -> set[tuple[int, int, int]]:
    """A blocklist as they come: mostly single addresses, some networks, a share IPv6.
    Nothing in 10.200.0.0/16, where the benchmark's own traffic lives."""
    out: set[tuple[int, int, int]] = set()
    while len(out) < size:
        if rnd.random() >= ipv6_share:
            plen = 32 if rnd.random() < 0.9 else rnd.randint(16, 24)
            net = rnd.getrandbits(32) >> (32 - plen) << (32 - plen)
            if net >> 16 == 0x0AC8 or (net >> 24 == 10 and plen < 16):
                continue
            out.add((4, net, plen))
        else:
            plen = 128 if rnd.random() < 0.5 else 64
            net = (0x2001_0DB8 << 96 | rnd.getrandbits(96)) >> (128 - plen) << (128 - plen)
            out.add((6, net, plen))
    return out


def blocklist_ruleset(rnd: random.Random, size: int) -> Ruleset:
    """Drop what is in a random blocklist of size elements, then a few services."""
    return ruleset_dropping(blocklist_elements(rnd, size))


def ruleset_dropping(elements: set[tuple[int, int, int]]) -> Ruleset:
    """Drop what is in the blocklist of these elements, then a few services; policy drop."""
    rules = [
        Rule(name="blocklist", action="drop", src=(), src_sets=("blocklist",)),
        Rule(name="web", action="accept", protos=frozenset({6}), dport=((80, 80), (443, 443))),
        Rule(name="ssh", action="accept", protos=frozenset({6}), dport=((22, 22),)),
    ]
    cset = CidrSet("blocklist", set(elements))
    return Ruleset(rules=rules, policy={"ingress": "drop", "egress": "accept"},
                   sets={"blocklist": {"type": "cidr", "size": len(cset), "slot": 0}},
                   cidr_sets={"blocklist": cset})


def netset_text(elements: set[tuple[int, int, int]]) -> str:
    """A FireHOL netset file of the elements."""
    from ..cidrset import format_element

    return "# bpfwall benchmark blocklist\n" + "\n".join(format_element(e) for e in elements) + "\n"


def nft_interval_set(name: str, family: int, elements) -> str:
    """A set of addresses and networks for nftables, as its users write a blocklist: an
    interval set (auto-merge takes the addresses inside networks of the list)."""
    from ..cidrset import format_element

    members = sorted(e for e in elements if e[0] == family)
    kind = "ipv4_addr" if family == 4 else "ipv6_addr"
    body = ("    elements = {\n" + ",\n".join(format_element(e) for e in members) + "\n    }\n") if members else ""
    return f"  set {name} {{\n    type {kind}; flags interval; auto-merge;\n{body}  }}"


def nft_blocklist(v4: list[tuple[int, int, int]], device: str) -> str:
    """The blocklist flood's rule set for nftables: the list's IPv4 elements as an interval
    set at the netdev ingress hook, one lookup a packet, counted."""
    return (f"table netdev bwbench {{\n{nft_interval_set('bl', 4, v4)}\n"
            f"  chain c {{\n    type filter hook ingress device {device} priority 0; policy accept;\n"
            "    ip saddr @bl counter drop\n  }\n}\n")


def ipset_blocklist(v4: list[tuple[int, int, int]]) -> str:
    """The same for iptables: an ipset hash:net (any prefix lengths) for `ipset restore`."""
    from ..cidrset import format_element

    return (f"create bwbench hash:net family inet maxelem {max(65536, 2 * len(v4))}\n"
            + "".join(f"add bwbench {format_element(e)}\n" for e in v4))


def nft_with_blocklist(n: int, elements: set[tuple[int, int, int]]) -> str:
    """The memory benchmark's rule set for nftables at an input hook: the blocklist as two
    interval sets (IPv4, IPv6) dropped first, then the n service rules as one concatenated
    map, as an nft user writes them."""
    return nft_rules(n + 1, "inet", as_map=True,  # n service rules and the flood rule
                     sets=(nft_interval_set("bl", 4, elements), nft_interval_set("bl6", 6, elements)),
                     first=("ip saddr @bl drop", "ip6 saddr @bl6 drop"))
