"""The data plane's semantics in plain Python: the oracle for tests and `explain`.

It parses raw frame bytes exactly as bpf/parse.h does and walks the rules in
order, first match wins. It shares nothing with the compiler: a bug in the
class/bitvector scheme shows up as a disagreement with this file.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from . import names
from .ruleset import Rule, Ruleset

MAX_VLAN_TAGS = 2
MAX_IPV6_EXT = 8
VLAN_TYPES = (0x8100, 0x88A8)
IPV6_EXT = {0, 43, 44, 60, 51, 135}  # hop-by-hop, routing, fragment, dest opts, AH, mobility

# XDP verdicts, as the program returns them
DROP, PASS, TX = 1, 2, 3


@dataclass
class Packet:
    is_ipv6: bool
    proto: int
    has_l4: bool
    saddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    daddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    l2_multicast: bool
    l3_off: int
    l4_off: int
    l3_end: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = 0
    icmp_code: int = 0

    @property
    def family(self) -> int:
        return 6 if self.is_ipv6 else 4

    @property
    def is_icmp(self) -> bool:
        return self.proto == (names.ICMPV6 if self.is_ipv6 else names.ICMP)


class Malformed(Exception):
    """The frame is too short for a header it claims, or a header is invalid."""


class NotIp(Exception):
    """ARP and other non-IP traffic: always passed."""


def parse(frame: bytes) -> Packet:
    """Parses a frame like bpf/parse.h; raises Malformed or NotIp."""
    n = len(frame)
    if n < 14:
        raise Malformed("shorter than an Ethernet header")
    multicast = bool(frame[0] & 1)
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    off = 14
    for _ in range(MAX_VLAN_TAGS):
        if ethertype not in VLAN_TYPES:
            break
        if off + 4 > n:
            raise Malformed("truncated VLAN tag")
        (ethertype,) = struct.unpack_from("!H", frame, off + 2)
        off += 4
    if ethertype == 0x0800:
        pkt = _parse_ipv4(frame, off, multicast)
    elif ethertype == 0x86DD:
        pkt = _parse_ipv6(frame, off, multicast)
    else:
        raise NotIp(f"ethertype 0x{ethertype:04x}")
    _parse_l4(frame, pkt)
    return pkt


def _parse_ipv4(frame: bytes, off: int, multicast: bool) -> Packet:
    n = len(frame)
    if off + 20 > n:
        raise Malformed("truncated IPv4 header")
    ver_ihl = frame[off]
    if ver_ihl >> 4 != 4 or ver_ihl & 0xF < 5:
        raise Malformed("bad IPv4 version or header length")
    hlen = (ver_ihl & 0xF) * 4
    (tot_len,) = struct.unpack_from("!H", frame, off + 2)
    if tot_len < hlen or tot_len > n - off:
        raise Malformed("IPv4 total length disagrees with the frame")
    (frag,) = struct.unpack_from("!H", frame, off + 6)
    return Packet(
        is_ipv6=False, proto=frame[off + 9], has_l4=(frag & 0x1FFF) == 0,
        saddr=ipaddress.IPv4Address(frame[off + 12 : off + 16]),
        daddr=ipaddress.IPv4Address(frame[off + 16 : off + 20]),
        l2_multicast=multicast, l3_off=off, l4_off=off + hlen, l3_end=off + tot_len,
    )


def _parse_ipv6(frame: bytes, l3: int, multicast: bool) -> Packet:
    n = len(frame)
    if l3 + 40 > n:
        raise Malformed("truncated IPv6 header")
    if frame[l3] >> 4 != 6:
        raise Malformed("bad IPv6 version")
    (plen,) = struct.unpack_from("!H", frame, l3 + 4)
    if plen > n - l3 - 40:
        raise Malformed("IPv6 payload length disagrees with the frame")
    l3_end = l3 + 40 + plen
    nh = frame[l3 + 6]
    off = l3 + 40
    has_l4 = True
    for _ in range(MAX_IPV6_EXT):
        if nh == 44:
            if off + 8 > n:
                raise Malformed("truncated fragment header")
            nh = frame[off]
            (frag_off,) = struct.unpack_from("!H", frame, off + 2)
            off += 8
            if frag_off & 0xFFF8:
                has_l4 = False
                break
            continue
        if nh not in IPV6_EXT:
            break
        if off + 2 > n:
            raise Malformed("truncated extension header")
        nxt, hdrlen = frame[off], frame[off + 1]
        off += (hdrlen + 2) * 4 if nh == 51 else (hdrlen + 1) * 8
        nh = nxt
    else:
        if nh in IPV6_EXT:
            raise Malformed("too many IPv6 extension headers")
    if off > l3_end:
        raise Malformed("IPv6 extension headers run past the payload")
    return Packet(
        is_ipv6=True, proto=nh, has_l4=has_l4,
        saddr=ipaddress.IPv6Address(frame[l3 + 8 : l3 + 24]),
        daddr=ipaddress.IPv6Address(frame[l3 + 24 : l3 + 40]),
        l2_multicast=multicast, l3_off=l3, l4_off=off, l3_end=l3_end,
    )


def _parse_l4(frame: bytes, pkt: Packet) -> None:
    if not pkt.has_l4:
        return
    n, off = len(frame), pkt.l4_off
    avail = pkt.l3_end - off
    if pkt.proto == names.TCP:
        if off + 20 > n or avail < 20:
            raise Malformed("truncated TCP header")
        doff = frame[off + 12] >> 4
        if doff < 5 or doff * 4 > avail:
            raise Malformed("bad TCP data offset")
        pkt.sport, pkt.dport = struct.unpack_from("!HH", frame, off)
        pkt.tcp_flags = frame[off + 13]
    elif pkt.proto in (17, 132):
        need = 8 if pkt.proto == 17 else 12
        if off + 4 > n or avail < need:
            raise Malformed("truncated UDP/SCTP header")
        pkt.sport, pkt.dport = struct.unpack_from("!HH", frame, off)
    elif pkt.is_icmp:
        if off + 8 > n or avail < 8:
            raise Malformed("truncated ICMP header")
        pkt.icmp_type, pkt.icmp_code = frame[off], frame[off + 1]


def matches(rule: Rule, pkt: Packet, ifname: str | None = None) -> bool:
    """Whether every condition of the rule holds for the packet."""
    if rule.interfaces is not None and ifname not in rule.interfaces:
        return False
    if rule.families is not None and pkt.family not in rule.families:
        return False
    if rule.protos is not None and pkt.proto not in rule.protos:
        return False
    for nets, addr in ((rule.src, pkt.saddr), (rule.dst, pkt.daddr)):
        if nets is not None and not any(addr in net for net in nets if net.version == pkt.family):
            return False
    has_ports = pkt.has_l4 and pkt.proto in names.PORT_PROTOCOLS
    for ranges, port in ((rule.sport, pkt.sport), (rule.dport, pkt.dport)):
        if ranges is not None and not (has_ports and any(lo <= port <= hi for lo, hi in ranges)):
            return False
    if rule.tcp_flags is not None:
        mask, value = rule.tcp_flags
        if not (pkt.has_l4 and pkt.proto == names.TCP and pkt.tcp_flags & mask == value):
            return False
    if rule.icmp is not None:
        if not (pkt.has_l4 and pkt.is_icmp):
            return False
        if not any(
            m.family == pkt.family
            and (m.type is None or m.type == pkt.icmp_type)
            and (m.code is None or m.code == pkt.icmp_code)
            for m in rule.icmp
        ):
            return False
    return True


@dataclass
class Decision:
    kind: str  # rule | policy | malformed | not_ip
    rule: int | None  # index into the direction's rules
    action: str  # accept | drop | reject
    verdict: int  # XDP verdict: DROP, PASS or TX
    reason: str = ""


def decide(ruleset: Ruleset, frame: bytes, ifname: str | None = None) -> Decision:
    """What bpfwall_ingress does with this frame arriving on ifname."""
    try:
        pkt = parse(frame)
    except NotIp as exc:
        return Decision("not_ip", None, "accept", PASS, str(exc))
    except Malformed as exc:
        return Decision("malformed", None, "drop", DROP, str(exc))
    for i, rule in enumerate(ruleset.ingress()):
        if matches(rule, pkt, ifname):
            return Decision("rule", i, rule.action, _verdict(rule.action, pkt), rule.name)
    action = ruleset.policy["ingress"]
    return Decision("policy", None, action, _verdict(action, pkt), "no rule matched")


def _verdict(action: str, pkt: Packet) -> int:
    if action == "accept":
        return PASS
    if action == "drop":
        return DROP
    return TX if reject_answers(pkt) else DROP


def reject_answers(pkt: Packet) -> bool:
    """Whether `reject` sends an answer (RST or ICMP error) rather than dropping silently."""
    if pkt.l2_multicast or not pkt.has_l4:
        return False
    if pkt.daddr.is_multicast or (not pkt.is_ipv6 and int(pkt.daddr) == 0xFFFFFFFF):
        return False
    if pkt.proto == names.TCP:
        return not pkt.tcp_flags & names.TCP_FLAGS["rst"] and pkt.l4_off <= 0x3FFF
    return not pkt.is_icmp
