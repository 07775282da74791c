"""Hypothesis strategies: rule sets and frames drawn from small universes so they collide.

Frames include what attackers send: VLAN stacks, IPv4 options and fragments,
IPv6 extension header chains (past the walker's bound too), truncations and
corrupted bytes. Rules are drawn directly as normalised Rule objects that
respect the rule language's constraints (ports need a port protocol, ...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import strategies as st
from scapy.all import (
    ARP,
    ICMP,
    IP,
    SCTP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPOption_NOP,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
)

from bpfwall.cidrset import CidrSet, from_network
from bpfwall.ruleset import IcmpMatch, Limit, Rule, Ruleset

NETS4 = ["10.200.0.0/16", "10.200.1.0/24", "10.200.1.128/25", "10.200.1.5/32", "0.0.0.0/0",
         "192.0.2.0/24", "10.0.0.0/8"]
NETS6 = ["fd42:200::/64", "fd42:200::/96", "fd42:200::5/128", "2001:db8::/32", "::/0", "fd42::/16"]
ADDRS4 = ["10.200.1.5", "10.200.1.200", "10.200.2.1", "192.0.2.9", "198.51.100.1", "10.1.1.1"]
ADDRS6 = ["fd42:200::5", "fd42:200::1:0:0:7", "2001:db8::1", "2001:db9::1", "fd42:1::1"]
PORTS = [0, 22, 53, 80, 443, 1024, 1500, 8080, 8050, 65535]
RANGES = [(20, 25), (1000, 2000), (8000, 8100), (0, 1023), (443, 443), (65535, 65535)]
PROTO_CHOICES = [None, {6}, {17}, {6, 17}, {132}, {6, 17, 132}, {1}, {58}, {1, 58}, {47}]
FLAG_BITS = [0x01, 0x02, 0x04, 0x10, 0x80]
ICMP_TYPES = {4: [0, 3, 8, 11], 6: [1, 2, 128, 129, 135]}
ICMP_CODES = [0, 1, 3, 4]
IFNAMES = ["lo", "bw-other"]


SET_NAMES = ["s0", "s1", "s2"]


@st.composite
def cidr_sets(draw, name: str) -> CidrSet:
    """A set from the same small universe as the rules' CIDRs, so they nest and overlap."""
    nets = draw(st.lists(st.sampled_from(NETS4 + NETS6), max_size=5, unique=True))
    return CidrSet(name, {from_network(ipaddress.ip_network(n)) for n in nets})


@st.composite
def rules(draw, name: str, set_names: tuple[str, ...] = ()) -> Rule:
    protos = draw(st.sampled_from(PROTO_CHOICES))
    kw: dict = {"name": name, "action": draw(st.sampled_from(["accept", "drop", "reject"]))}
    if protos is not None:
        kw["protos"] = frozenset(protos)
    if draw(st.booleans()) and draw(st.booleans()):
        kw["families"] = frozenset({draw(st.sampled_from([4, 6]))})
    for key in ("src", "dst"):
        if draw(st.booleans()):
            refs = draw(st.lists(st.sampled_from(set_names), max_size=2, unique=True)) if set_names else []
            nets = draw(st.lists(st.sampled_from(NETS4 + NETS6), min_size=0 if refs else 1, max_size=3,
                                 unique=True))
            kw[key] = tuple(ipaddress.ip_network(n) for n in nets)
            kw[f"{key}_sets"] = tuple(sorted(refs))
    if protos and protos <= {6, 17, 132}:
        for key in ("sport", "dport"):
            if draw(st.booleans()):
                kw[key] = tuple(draw(st.lists(
                    st.one_of(st.sampled_from(RANGES), st.sampled_from(PORTS).map(lambda p: (p, p))),
                    min_size=1, max_size=3)))
    if protos == {6} and draw(st.booleans()):
        mask = draw(st.sets(st.sampled_from(FLAG_BITS), min_size=1, max_size=3))
        m = sum(mask)
        kw["tcp_flags"] = (m, m & draw(st.integers(0, 255)))
    if protos and protos <= {1, 58} and draw(st.booleans()):
        matches = []
        for fam in sorted({4 if p == 1 else 6 for p in protos}):
            t = draw(st.one_of(st.none(), st.sampled_from(ICMP_TYPES[fam])))
            c = draw(st.one_of(st.none(), st.sampled_from(ICMP_CODES)))
            if t is None and c is None:
                t = ICMP_TYPES[fam][0]
            matches.append(IcmpMatch(fam, t, c))
        kw["icmp"] = tuple(matches)
    if draw(st.integers(0, 5)) == 0:
        kw["interfaces"] = tuple(draw(st.lists(st.sampled_from(IFNAMES), min_size=1, max_size=2,
                                               unique=True)))
    if draw(st.integers(0, 3)) == 0:
        kw["ct"] = frozenset(draw(st.sets(st.integers(0, 3), min_size=1, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        kw["direction"] = "egress"
    return Rule(**kw)


@st.composite
def rulesets(draw, max_rules: int = 8, min_sets: int = 0) -> Ruleset:
    n = draw(st.integers(0, max_rules))
    names = SET_NAMES[: draw(st.integers(min_sets, len(SET_NAMES)))]
    sets = {name: draw(cidr_sets(name)) for name in names}
    rs = [draw(rules(f"r{i}", tuple(names))) for i in range(n)]
    policy = draw(st.sampled_from(["accept", "drop"]))
    egress = draw(st.sampled_from(["accept", "drop"]))
    return Ruleset(rules=rs, policy={"ingress": policy, "egress": egress},
                   conntrack={"max_entries": 4096, "timeouts": {}},
                   sets={n: {"type": "cidr", "size": len(sets[n]), "slot": i} for i, n in enumerate(names)},
                   cidr_sets=sets)


@st.composite
def blocklist_rulesets(draw, max_rules: int = 8) -> Ruleset:
    """A rule set that opens with rules dropping by source set alone (the data plane
    judges those first, before the connection table), then random rules."""
    ruleset = draw(rulesets(max_rules, min_sets=1))
    names = tuple(ruleset.cidr_sets)
    heads = [Rule(name=f"block{i}", action="drop", src=(),
                  src_sets=tuple(sorted(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2,
                                                      unique=True)))))
             for i in range(draw(st.integers(1, 3)))]
    ruleset.rules[:0] = heads
    return ruleset


@st.composite
def l4(draw, proto: int, v6: bool):
    sport, dport = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    payload = Raw(b"x" * draw(st.integers(0, 40)))
    if proto == 6:
        return TCP(sport=sport, dport=dport, flags=draw(st.integers(0, 255)), seq=draw(st.integers(0, 2**32 - 1)),
                   ack=draw(st.integers(0, 2**32 - 1))) / payload
    if proto == 17:
        return UDP(sport=sport, dport=dport) / payload
    if proto == 132:
        return SCTP(sport=sport, dport=dport) / payload
    if proto == 1:
        return ICMP(type=draw(st.sampled_from(ICMP_TYPES[4] + [5])), code=draw(st.sampled_from(ICMP_CODES))) / payload
    if proto == 58:
        t = draw(st.sampled_from(ICMP_TYPES[6] + [136]))
        if t == 2:
            return ICMPv6PacketTooBig(code=draw(st.sampled_from(ICMP_CODES))) / payload
        return ICMPv6EchoRequest(type=t, code=draw(st.sampled_from(ICMP_CODES))) / payload
    return payload


@st.composite
def frames(draw) -> bytes:
    """An Ethernet frame, usually valid, sometimes damaged."""
    if draw(st.integers(0, 30)) == 0:
        return bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP())
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([6, 6, 17, 17, 132, 58 if v6 else 1, 58 if v6 else 1, 47, 1 if v6 else 58]))
    dst_mac = draw(st.sampled_from(["02:00:00:00:00:01"] * 5 + ["33:33:00:00:00:01", "ff:ff:ff:ff:ff:ff"]))
    eth = Ether(dst=dst_mac, src="02:00:00:00:00:02")
    tags = draw(st.integers(0, 3 if draw(st.integers(0, 10)) == 0 else 2))
    layers = eth
    for i in range(tags):
        layers = layers / (Dot1AD(vlan=100) if i == 0 and tags == 2 else Dot1Q(vlan=10 + i))
    upper = draw(l4(proto, v6))
    if v6:
        ip = IPv6(src=draw(st.sampled_from(ADDRS6)), dst=draw(st.sampled_from(ADDRS6 + ["ff02::1"])))
        chain = draw(st.lists(st.sampled_from(["hbh", "dst", "rt", "frag0", "fragN"]), max_size=10))
        pkt = layers / ip
        for ext in chain:
            if ext == "hbh":
                pkt = pkt / IPv6ExtHdrHopByHop()
            elif ext == "dst":
                pkt = pkt / IPv6ExtHdrDestOpt()
            elif ext == "rt":
                pkt = pkt / IPv6ExtHdrRouting()
            elif ext == "frag0":
                pkt = pkt / IPv6ExtHdrFragment(offset=0, m=1)
            else:
                pkt = pkt / IPv6ExtHdrFragment(offset=draw(st.integers(1, 100)))
        pkt = pkt / upper
    else:
        kw = {}
        if draw(st.integers(0, 4)) == 0:
            kw["options"] = [IPOption_NOP()] * draw(st.integers(1, 8))
        if draw(st.integers(0, 4)) == 0:
            kw["frag"] = draw(st.sampled_from([0, 1, 100]))
            kw["flags"] = "MF"
        ip = IP(src=draw(st.sampled_from(ADDRS4)),
                dst=draw(st.sampled_from(ADDRS4 + ["224.0.0.1", "255.255.255.255"])), proto=proto, **kw)
        pkt = layers / ip / upper
    raw = bytearray(bytes(pkt))
    damage = draw(st.integers(0, 6))
    if damage == 1:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == 2 and raw:
        pos = draw(st.integers(0, len(raw) - 1))
        raw[pos] = draw(st.integers(0, 255))
    elif damage == 3:
        raw += b"\0" * draw(st.integers(1, 30))  # Ethernet padding
    return bytes(raw)


HOSTS = {4: "10.200.0.1", 6: "fd42:200::1"}
PEERS = {4: ["10.200.1.5", "192.0.2.9"], 6: ["fd42:200::5", "2001:db8::1"]}
FLOW_PORTS = [22, 53, 80, 40000, 40001]
TCP_FLAGS = ["S", "SA", "A", "PA", "FA", "R", "RA", "F"]


@st.composite
def flow_steps(draw) -> tuple[str, bytes]:
    """One packet of a small universe of flows between the host and its peers, either way."""
    fam = draw(st.sampled_from([4, 6]))
    host, peer = HOSTS[fam], draw(st.sampled_from(PEERS[fam]))
    direction = draw(st.sampled_from(["ingress", "egress"]))
    src, dst = (peer, host) if direction == "ingress" else (host, peer)
    ip = IP(src=src, dst=dst) if fam == 4 else IPv6(src=src, dst=dst)
    p1, p2 = draw(st.sampled_from(FLOW_PORTS)), draw(st.sampled_from(FLOW_PORTS))
    kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "udp", "echo", "error", "gre"]))
    if kind == "tcp":
        upper = TCP(sport=p1, dport=p2, flags=draw(st.sampled_from(TCP_FLAGS)))
    elif kind == "udp":
        upper = UDP(sport=p1, dport=p2)
    elif kind == "echo":
        ident = draw(st.sampled_from([1, 2]))
        reply = draw(st.booleans())
        upper = (ICMPv6EchoRequest(id=ident, type=129 if reply else 128) if fam == 6
                 else ICMP(type=0 if reply else 8, id=ident))
    elif kind == "error":
        # quotes a packet that went the other way
        inner_ip = IP(src=dst, dst=src) if fam == 4 else IPv6(src=dst, dst=src)
        inner = inner_ip / (UDP(sport=p2, dport=p1) if draw(st.booleans()) else TCP(sport=p2, dport=p1))
        upper = (ICMP(type=3, code=3) if fam == 4 else ICMPv6PacketTooBig()) / Raw(bytes(inner)[:48])
    else:
        upper = Raw(b"g" * 8)
        if fam == 4:
            ip.proto = 47
        else:
            ip.nh = 47
    return direction, bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / ip / upper)


@st.composite
def limits(draw) -> Limit:
    """A limit small enough that a short sequence of packets runs over it."""
    by_bytes = draw(st.integers(0, 3)) == 0
    if by_bytes:
        count = draw(st.sampled_from([60, 200, 1000]))
        burst = draw(st.sampled_from([60, 150, 400]))
    else:
        count = draw(st.sampled_from([1, 2, 3, 7]))
        burst = draw(st.integers(1, 3))
    return Limit(count=count, period=draw(st.sampled_from([1, 60])), burst=burst,
                 per_source=draw(st.booleans()), bytes=by_bytes, over=draw(st.booleans()))


@st.composite
def guarded_rulesets(draw, max_rules: int = 6) -> Ruleset:
    """rulesets() whose ingress rules now and then have limits and bans, maybe with the
    port-scan watch on."""
    rs = draw(rulesets(max_rules))
    out = []
    for r in rs.rules:
        kw = {}
        if draw(st.integers(0, 1)) == 0:
            kw["limit"] = draw(limits())
        if r.direction == "ingress" and draw(st.integers(0, 3)) == 0:
            kw["action"], kw["ban_for"] = "ban", draw(st.sampled_from([1, 3, 30]))
        out.append(replace(r, **kw))
    rs.rules = out
    if draw(st.booleans()):
        rs.conntrack["port_scan"] = {"ports": draw(st.integers(1, 3)), "window": draw(st.sampled_from([1, 5])),
                                     "ban_for": draw(st.sampled_from([1, 5]))}
    if draw(st.booleans()):  # sources that no ban touches: one of the guard steps' sources, or a prefix
        rs.never_ban = draw(st.lists(st.sampled_from(
            ["10.200.1.5/32", "10.200.1.0/24", "fd42:200::/64", "fd42:200::1:0:0:0/80", "192.0.2.0/24"]),
            min_size=1, max_size=3, unique=True))
        if rs.cidr_sets and draw(st.booleans()):
            rs.never_ban.append("@" + draw(st.sampled_from(sorted(rs.cidr_sets))))
    if draw(st.booleans()):  # a budget of reject answers small enough to run out within a test
        rs.conntrack["reject_budget"] = {
            "count": draw(st.integers(1, 4)), "period": 1, "burst": draw(st.integers(1, 4)),
            "source_count": 1, "source_period": draw(st.sampled_from([1, 60])),
            "source_burst": draw(st.integers(1, 3))}
    return rs


# Steps of the clock between packets: none, a little, a bucket's worth, a ban's worth.
CLOCK_STEPS = [0, 0, 0, 1_000_000, 150_000_000, 500_000_000, 1_000_000_000, 4_000_000_000, 61_000_000_000]


@st.composite
def guard_steps(draw) -> tuple[int, bytes]:
    """(nanoseconds to move the clock, an ingress frame): sources and ports from small
    universes so buckets, bans and scans come into play."""
    fam = draw(st.sampled_from([4, 6]))
    src = draw(st.sampled_from(ADDRS4[:3] if fam == 4 else ADDRS6[:2] + ["fd42:200::9"]))
    ip = IP(src=src, dst=HOSTS[4]) if fam == 4 else IPv6(src=src, dst=HOSTS[6])
    kind = draw(st.sampled_from(["syn", "syn", "udp", "ack", "echo"]))
    port = draw(st.sampled_from(PORTS))
    if kind in ("syn", "ack"):
        upper = TCP(sport=40000, dport=port, flags="S" if kind == "syn" else "A")
    elif kind == "udp":
        upper = UDP(sport=40000, dport=port)
    else:
        upper = ICMP(type=8) if fam == 4 else ICMPv6EchoRequest()
    pad = Raw(b"p" * draw(st.sampled_from([0, 0, 60, 400])))
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / ip / upper / pad)
    return draw(st.sampled_from(CLOCK_STEPS)), frame


@st.composite
def edits(draw, base: Ruleset, max_edits: int = 4) -> list[Ruleset]:
    """A sequence of rule sets, each the one before with one rule replaced by another of
    the same name (a one-rule change, as an operator makes one), the rest and the sets kept."""
    out: list[Ruleset] = []
    current = base
    for _ in range(draw(st.integers(1, max_edits))):
        if not current.rules:
            break
        i = draw(st.integers(0, len(current.rules) - 1))
        replaced = draw(rules(current.rules[i].name, tuple(current.cidr_sets)))
        current = Ruleset(rules=[*current.rules[:i], replaced, *current.rules[i + 1:]], policy=current.policy,
                          conntrack=current.conntrack, sets=current.sets, cidr_sets=current.cidr_sets)
        out.append(current)
    return out


@st.composite
def owner_rulesets(draw, cgroups: list[str], uids: list[int], max_rules: int = 8) -> Ruleset:
    """A rule set whose egress rules often name a cgroup (from cgroups) or a uid."""
    ruleset = draw(rulesets(max_rules))
    out = []
    for r in ruleset.rules:
        if draw(st.booleans()):
            kw: dict = {"direction": "egress"}
            if draw(st.integers(0, 2)):
                kw["cgroup"] = draw(st.sampled_from(cgroups))
            if draw(st.booleans()):
                kw["user"] = draw(st.sampled_from(uids))
            r = replace(r, **kw)
        out.append(r)
    ruleset.rules = out
    return ruleset
