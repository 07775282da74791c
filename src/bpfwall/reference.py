"""The data plane's semantics in plain Python: the oracle for tests and `explain`.

It parses raw frame bytes exactly as bpf/parse.h does and walks the rules in
order, first match wins. It shares nothing with the compiler: a bug in the
class/bitvector scheme shows up as a disagreement with this file.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field, replace

from . import names, shared
from .cidrset import CidrSet
from .owners import Owner, cgroup_covers
from .ruleset import Rule, Ruleset

MAX_VLAN_TAGS = 2
MAX_IPV6_EXT = 8
VLAN_TYPES = (0x8100, 0x88A8)
IPV6_EXT = {0, 43, 44, 60, 51, 135}  # hop-by-hop, routing, fragment, dest opts, AH, mobility

# XDP verdicts, as the program returns them
DROP, PASS, TX = 1, 2, 3
# tcx verdicts of the egress program
TCX_NEXT, TCX_DROP, TCX_REDIRECT = -1, 2, 7
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
UDP = 17


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
    icmp_id: int = 0
    frame_len: int = 0
    inner: tuple | None = None  # (proto, src bytes, sport, dst bytes, dport) an ICMP error quotes

    @property
    def family(self) -> int:
        return 6 if self.is_ipv6 else 4

    @property
    def saddr_bytes(self) -> bytes:
        return self.saddr.packed

    @property
    def daddr_bytes(self) -> bytes:
        return self.daddr.packed

    @property
    def is_icmp(self) -> bool:
        return self.proto == (names.ICMPV6 if self.is_ipv6 else names.ICMP)


class Malformed(Exception):
    """The frame is too short for a header it claims, or a header is invalid."""


class NotIp(Exception):
    """ARP and other non-IP traffic: always passed."""


def icmp_is_echo(is_ipv6: bool, icmp_type: int) -> bool:
    return icmp_type in ((128, 129) if is_ipv6 else (8, 0))


def icmp_is_error(is_ipv6: bool, icmp_type: int) -> bool:
    return 1 <= icmp_type <= 4 if is_ipv6 else icmp_type in (3, 11, 12)


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
    pkt.frame_len = n
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
        (pkt.icmp_id,) = struct.unpack_from("!H", frame, off + 4)
        if icmp_is_error(pkt.is_ipv6, pkt.icmp_type):
            pkt.inner = _parse_quote(frame, pkt)


def _parse_quote(frame: bytes, pkt: Packet) -> tuple | None:
    """The flow an ICMP error quotes, as parse_icmp_quote() reads it; None when cut short."""
    n, off = len(frame), pkt.l4_off + 8
    if pkt.is_ipv6:
        if off + 40 > n or frame[off] >> 4 != 6:
            return None
        proto, src, dst = frame[off + 6], frame[off + 8 : off + 24], frame[off + 24 : off + 40]
        off += 40
    else:
        if off + 20 > n or frame[off] >> 4 != 4 or frame[off] & 0xF < 5:
            return None
        proto, src, dst = frame[off + 9], frame[off + 12 : off + 16], frame[off + 16 : off + 20]
        off += (frame[off] & 0xF) * 4
    if off + 8 > n or off + 8 > pkt.l3_end:
        return None
    sport = dport = 0
    if proto in names.PORT_PROTOCOLS:
        sport, dport = struct.unpack_from("!HH", frame, off)
    elif proto == pkt.proto and icmp_is_echo(pkt.is_ipv6, frame[off]):
        (ident,) = struct.unpack_from("!H", frame, off + 4)
        if frame[off] in (8, 128):
            sport = ident
        else:
            dport = ident
    return proto, src.ljust(16, b"\0"), sport, dst.ljust(16, b"\0"), dport

def matches(rule: Rule, pkt: Packet, ifname: str | None = None, ct_state: int = 0,
            sets: dict[str, CidrSet] | None = None, owner: Owner | None = None) -> bool:
    """Whether every condition of the rule holds for the packet (sets: the CIDR sets'
    elements; owner: the sending socket's cgroup and uid, None for a packet without one)."""
    if rule.interfaces is not None and ifname not in rule.interfaces:
        return False
    if rule.cgroup is not None and (owner is None or not cgroup_covers(rule.cgroup, owner.cgroup)):
        return False
    if rule.user is not None and (owner is None or owner.uid != rule.user):
        return False
    if rule.ct is not None and ct_state not in rule.ct:
        return False
    if rule.families is not None and pkt.family not in rule.families:
        return False
    if rule.protos is not None and pkt.proto not in rule.protos:
        return False
    for nets, refs, addr, raw in ((rule.src, rule.src_sets, pkt.saddr, pkt.saddr_bytes),
                                  (rule.dst, rule.dst_sets, pkt.daddr, pkt.daddr_bytes)):
        if nets is None:
            continue
        if any(addr in net for net in nets if net.version == pkt.family):
            continue
        if not any((sets or {})[name].contains(pkt.family, raw) for name in refs):
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


NS = 1_000_000_000


def source_key(pkt: Packet) -> tuple[bool, bytes]:
    """What a ban or a per-source bucket applies to: an IPv4 address, an IPv6 /64."""
    return (pkt.is_ipv6, pkt.saddr_bytes[:8] if pkt.is_ipv6 else pkt.saddr_bytes)


def is_pure_syn(pkt: Packet) -> bool:
    return pkt.has_l4 and pkt.proto == names.TCP and pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN


def is_pure_ack(pkt: Packet) -> bool:
    return pkt.has_l4 and pkt.proto == names.TCP and pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK


def gcra(tat: int, now: int, cost: int, tolerance: int) -> int | None:
    """The bucket's next tat if a packet costing cost conforms, else None (ratelimit.h)."""
    nxt = max(tat, now) + cost
    return None if nxt - now > tolerance else nxt


class Guard:
    """The state of limits, bans, the port-scan watch and SYN-cookie rates, as ratelimit.h
    and syncookie.h keep it; now is the time in nanoseconds (the data plane's test clock)."""

    def __init__(self) -> None:
        self.tat: dict[tuple, int] = {}  # (rule index[, source]) -> tat
        self.bans: dict[tuple[bool, bytes], int] = {}  # source -> expiry
        self.scans: dict[tuple[bool, bytes], list] = {}  # source -> [window start, seen bits, ports]
        self.syn_tat: dict[int, int] = {}

    def banned(self, pkt: Packet, now: int) -> bool:
        key = source_key(pkt)
        if key not in self.bans:
            return False
        if self.bans[key] > now:
            return True
        del self.bans[key]
        return False

    def passes(self, rule: Rule, index: int, pkt: Packet, now: int, learn: bool) -> bool:
        lim = rule.limit
        if lim is None:
            return True
        cost = (pkt.frame_len if lim.bytes else 1) * lim.period * NS // lim.count
        tolerance = lim.burst * lim.period * NS // lim.count
        key = (index, source_key(pkt)) if lim.per_source else (index,)
        nxt = gcra(self.tat.get(key, 0), now, cost, tolerance)
        if nxt is not None and learn:
            self.tat[key] = nxt
        ok = nxt is not None
        return not ok if lim.over else ok

    def ban(self, pkt: Packet, now: int, secs: int) -> None:
        self.bans[source_key(pkt)] = now + secs * NS

    def scan_note(self, pkt: Packet, now: int, scan: dict) -> bool:
        """A refused probe of a port; True when it gets the source banned."""
        key = source_key(pkt)
        st = self.scans.setdefault(key, [now, 0, 0])
        if now - st[0] > scan["window"] * NS:
            self.scans[key] = st = [now, 0, 0]
        bit = ((pkt.dport * 40503) & 0xFFFFFFFF) >> 8 & 255
        if st[1] >> bit & 1:
            return False
        st[1] |= 1 << bit
        st[2] += 1
        if st[2] <= scan["ports"]:
            return False
        del self.scans[key]
        self.ban(pkt, now, scan["ban_for"])
        return True

    def syn_flooded(self, pkt: Packet, now: int, syn: dict) -> bool:
        if pkt.dport not in syn["ports"]:
            return False
        cost = syn["period"] * NS // syn["count"]
        nxt = gcra(self.syn_tat.get(pkt.dport, 0), now, cost, syn["burst"] * syn["period"] * NS // syn["count"])
        if nxt is None:
            return True
        self.syn_tat[pkt.dport] = nxt
        return False

    def reject_allowed(self, pkt: Packet, now: int, budget: dict[str, int], learn: bool) -> bool:
        """Whether the reject answer budget has room: the source's bucket, then everyone's
        (reject_budget_allows in ratelimit.h). Without learn the buckets are only looked at."""
        for key, count, period, burst in (
                (("reject", source_key(pkt)), budget["source_count"], budget["source_period"],
                 budget["source_burst"]),
                (("reject",), budget["count"], budget["period"], budget["burst"])):
            cost = period * NS // count
            nxt = gcra(self.tat.get(key, 0), now, cost, burst * cost)
            if nxt is None:
                return False
            if learn:
                self.tat[key] = nxt
        return True


@dataclass
class Decision:
    kind: str  # rule | policy | banned | malformed | not_ip
    rule: int | None  # index into the direction's rules
    action: str  # accept | drop | reject | ban
    verdict: int  # ingress: XDP_DROP, XDP_PASS or XDP_TX; egress: TCX_NEXT, TCX_DROP or TCX_REDIRECT
    reason: str = ""
    ct_state: int | None = None


def decide(ruleset: Ruleset, frame: bytes, ifname: str | None = None, direction: str = "ingress",
           ct: Conntrack | None = None, now: int = 0, learn: bool = True, guard: Guard | None = None,
           clock: int | None = None, owner: Owner | None = None) -> Decision:
    """What bpfwall_ingress (or bpfwall_egress) does with this frame on ifname.

    owner: the cgroup and uid of the socket that sent an egress frame (None: no socket,
    as for a forwarded packet; rules with cgroup or user then do not match).

    With ct (and a rule set that uses ct), the packet's connection state is
    found first and an accepted packet updates the table, as in conntrack.h
    (unless learn is False: a frame `explain` sends changes nothing); now is
    the time in nanoseconds. With guard, limits, bans, the port-scan watch and
    SYN cookies keep their state there, on the clock `clock` (default now);
    without it every limit is taken as passed and nothing is banned.
    """
    egress = direction == "egress"
    try:
        pkt = parse(frame)
    except NotIp as exc:
        return Decision("not_ip", None, "accept", TCX_NEXT if egress else PASS, str(exc))
    except Malformed as exc:
        return Decision("malformed", None, "drop", TCX_DROP if egress else DROP, str(exc))
    t = now if clock is None else clock
    cookies = ruleset.conntrack.get("syn_cookies") if not egress else None
    if guard is not None and not egress and ruleset.bans_enabled() and guard.banned(pkt, t):
        return Decision("banned", None, "drop", DROP, "the source is banned")
    tracking = ct is not None and ruleset.uses_ct()
    lookup = ct.state_of(pkt, now) if tracking else None
    if lookup and lookup.state == shared.CT_INVALID and cookies and is_pure_ack(pkt) \
            and pkt.dport in cookies["ports"]:
        lookup.state = shared.CT_NEW  # the handshake's end after a cookie: the kernel checks it
    state = lookup.state if lookup else 0
    for i, rule in enumerate(ruleset.direction(direction)):
        if matches(rule, pkt, ifname, state, ruleset.cidr_sets, owner) and (
                guard is None or guard.passes(rule, i, pkt, t, learn)):
            d = Decision("rule", i, rule.action, _verdict(rule.action, pkt, egress), rule.name, state)
            break
    else:
        action = ruleset.policy[direction]
        d = Decision("policy", None, action, _verdict(action, pkt, egress), "no rule matched", state)
    if guard is not None and learn and not egress:
        scan = ruleset.conntrack.get("port_scan")
        exempt = ruleset.never_banned(pkt.saddr)  # never_ban: no ban, no count towards one
        if d.action == "ban":
            if not exempt:
                guard.ban(pkt, t, ruleset.direction(direction)[d.rule].ban_for or 0)
        elif scan and d.action != "accept" and pkt.has_l4 and (pkt.proto == UDP or is_pure_syn(pkt)) \
                and not exempt:
            guard.scan_note(pkt, t, scan)
        if cookies and d.action == "accept" and is_pure_syn(pkt) and guard.syn_flooded(pkt, t, cookies):
            d.verdict = TX
            d.reason += " (answered with a SYN cookie)"
            return d  # no connection state for a SYN answered here
    if guard is not None and not egress and d.action == "reject" and d.verdict == TX \
            and not guard.reject_allowed(pkt, t, ruleset.reject_budget(), learn):
        d.verdict = DROP
        d.reason += " (over the reject answer budget: dropped)"
    if tracking and learn and d.action == "accept":
        ct.accepted(pkt, lookup, now)
    return d


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
            ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"))


def decide_connect(ruleset: Ruleset, proto: int, dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
                   dport: int, owner: Owner, local: frozenset = frozenset()) -> tuple[str, int | None]:
    """What the cgroup hooks do with a TCP connect(), a UDP connect() or an unconnected UDP
    sendmsg() to dst:dport by owner, in the namespace the apply protects (local: its own
    addresses). Returns ("go", rule or None) when the call goes on and its packets are
    judged on their way out, or ("drop" | "reject", rule or None for the policy).

    Of a packet of the connection, the call knows the protocol, the destination, for
    TCP that it opens a connection (its state is new), and who makes it. The first rule
    that can match on those decides only if it asks nothing else (source, source port,
    interface, TCP flags, for UDP the connection state, a limit or a ban); the policy
    decides when no rule can match."""
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped  # it leaves as IPv4
    if any(dst in net for net in LOOPBACK if net.version == dst.version) or dst in local:
        return "go", None
    pkt = Packet(is_ipv6=dst.version == 6, proto=proto, has_l4=True,
                 saddr=ipaddress.ip_address("::" if dst.version == 6 else "0.0.0.0"), daddr=dst,
                 l2_multicast=False, l3_off=0, l4_off=0, l3_end=0, dport=dport)
    for i, rule in enumerate(ruleset.direction("egress")):
        unknown = (rule.interfaces is not None or rule.src is not None or rule.sport is not None
                   or rule.tcp_flags is not None or rule.limit is not None or rule.action == "ban"
                   or (proto == UDP and rule.ct is not None))
        known = replace(rule, interfaces=None, src=None, src_sets=(), sport=None, tcp_flags=None,
                        ct=rule.ct if proto != UDP else None)
        if matches(known, pkt, None, shared.CT_NEW, ruleset.cidr_sets, owner):
            if unknown or rule.action not in ("drop", "reject"):
                return "go", i
            return rule.action, i
    action = ruleset.policy["egress"]
    return (action if action in ("drop", "reject") else "go"), None


def _verdict(action: str, pkt: Packet, egress: bool = False) -> int:
    if egress:  # a reject answered goes to the local stack (reject_skb.h)
        if action == "reject" and reject_answers(pkt, egress=True):
            return TCX_REDIRECT
        return TCX_NEXT if action == "accept" else TCX_DROP
    if action == "accept":
        return PASS
    if action in ("drop", "ban"):
        return DROP
    return TX if reject_answers(pkt) else DROP


def reject_answers(pkt: Packet, egress: bool = False) -> bool:
    """Whether `reject` sends an answer (RST or ICMP error) rather than dropping silently.
    On egress an ICMP error is built only for a frame without VLAN tags."""
    if pkt.l2_multicast or not pkt.has_l4:
        return False
    if pkt.daddr.is_multicast or (not pkt.is_ipv6 and int(pkt.daddr) == 0xFFFFFFFF):
        return False
    if pkt.proto == names.TCP:
        return not pkt.tcp_flags & names.TCP_FLAGS["rst"] and pkt.l4_off <= 0x3FFF
    return not pkt.is_icmp and (not egress or pkt.l3_off == 14)


@dataclass
class CtEntry:
    created: int
    last_seen: int
    orig_lo: bool
    tcp_state: int = shared.TCP_OTHER
    seen_reply: bool = False
    fin_orig: bool = False
    fin_reply: bool = False
    packets: list[int] = field(default_factory=lambda: [0, 0])
    nbytes: list[int] = field(default_factory=lambda: [0, 0])


@dataclass
class CtLookup:
    state: int
    key: tuple | None = None
    entry: CtEntry | None = None
    from_lo: bool = False
    stale: bool = False


class Conntrack:
    """The connection table of conntrack.h, unbounded (tests stay far below any LRU limit)."""

    def __init__(self, timeouts: dict[str, int] | None = None) -> None:
        self.timeouts = {**shared.CT_TIMEOUT_DEFAULTS, **(timeouts or {})}
        self.table: dict[tuple, CtEntry] = {}
        self.created = 0

    @staticmethod
    def key(proto: int, is_ipv6: bool, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[tuple, bool]:
        lo = (src, sport) <= (dst, dport)  # bytes compare like end_is_lo()'s byte loop
        a, b = ((src, sport), (dst, dport)) if lo else ((dst, dport), (src, sport))
        return (a[0], b[0], a[1], b[1], proto, is_ipv6), lo

    def timeout_ns(self, e: CtEntry, proto: int) -> int:
        t = self.timeouts
        if proto == names.TCP:
            secs = {shared.TCP_ESTABLISHED: t["tcp_established"], shared.TCP_FIN: t["tcp_fin"],
                    shared.TCP_TIME_WAIT: t["tcp_fin"], shared.TCP_CLOSE: t["tcp_close"]}.get(
                        e.tcp_state, t["tcp_syn"])
        elif proto == 17:
            secs = t["udp_stream"] if e.seen_reply else t["udp"]
        elif proto in (names.ICMP, names.ICMPV6):
            secs = t["icmp"]
        else:
            secs = t["generic"]
        return secs * 1_000_000_000

    def find(self, key: tuple, now: int) -> tuple[CtEntry | None, bool]:
        e = self.table.get(key)
        if e is not None and now - e.last_seen > self.timeout_ns(e, key[4]):
            return None, True
        return e, False

    def state_of(self, pkt: Packet, now: int) -> CtLookup:
        if pkt.is_icmp and pkt.has_l4 and icmp_is_error(pkt.is_ipv6, pkt.icmp_type):
            if pkt.inner is None:
                return CtLookup(shared.CT_INVALID)
            proto, src, sport, dst, dport = pkt.inner
            key, _ = self.key(proto, pkt.is_ipv6, src, sport, dst, dport)
            e, _ = self.find(key, now)
            return CtLookup(shared.CT_RELATED if e else shared.CT_INVALID)
        sport = dport = 0
        if pkt.has_l4 and pkt.proto in names.PORT_PROTOCOLS:
            sport, dport = pkt.sport, pkt.dport
        elif pkt.has_l4 and pkt.is_icmp and icmp_is_echo(pkt.is_ipv6, pkt.icmp_type):
            # the identifier on the requester's end: a request from the other side is another flow
            if pkt.icmp_type in (8, 128):
                sport = pkt.icmp_id
            else:
                dport = pkt.icmp_id
        key, from_lo = self.key(pkt.proto, pkt.is_ipv6, pkt.saddr.packed.ljust(16, b"\0"), sport,
                                pkt.daddr.packed.ljust(16, b"\0"), dport)
        e, stale = self.find(key, now)
        syn_only = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        if e and pkt.proto == names.TCP and e.tcp_state >= shared.TCP_TIME_WAIT and syn_only:
            e, stale = None, True  # a new connection reusing the ports of a closed one
        lk = CtLookup(shared.CT_NEW, key, e, from_lo, stale)
        if e is None:
            if pkt.proto == names.TCP:
                ok = pkt.has_l4 and pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
                lk.state = shared.CT_NEW if ok else shared.CT_INVALID
            elif pkt.is_icmp and pkt.has_l4 and pkt.icmp_type == (129 if pkt.is_ipv6 else 0):
                lk.state = shared.CT_INVALID
            return lk
        orig = from_lo == e.orig_lo
        lk.state = shared.CT_ESTABLISHED if (not orig or e.seen_reply) else shared.CT_NEW
        return lk

    def accepted(self, pkt: Packet, lk: CtLookup, now: int) -> None:
        if lk.state in (shared.CT_RELATED, shared.CT_INVALID):
            return
        e = lk.entry
        if e is None:
            tcp_state = shared.TCP_OTHER
            if pkt.proto == names.TCP:  # a flow whose SYN got a cookie begins with its ACK
                tcp_state = shared.TCP_SYN_SENT if pkt.tcp_flags & TCP_SYN else shared.TCP_ESTABLISHED
            e = CtEntry(created=now, last_seen=now, orig_lo=lk.from_lo, tcp_state=tcp_state)
            e.packets[0], e.nbytes[0] = 1, pkt.frame_len
            self.table[lk.key] = e
            self.created += not lk.stale
            return
        orig = lk.from_lo == e.orig_lo
        e.last_seen = now
        d = 0 if orig else 1
        e.packets[d] += 1
        e.nbytes[d] += pkt.frame_len
        if not orig:
            e.seen_reply = True
        if pkt.proto == names.TCP and pkt.has_l4:
            f = pkt.tcp_flags
            if f & TCP_RST:
                e.tcp_state = shared.TCP_CLOSE
            elif f & TCP_FIN:
                if orig:
                    e.fin_orig = True
                else:
                    e.fin_reply = True
                e.tcp_state = shared.TCP_TIME_WAIT if e.fin_orig and e.fin_reply else shared.TCP_FIN
            elif e.tcp_state == shared.TCP_SYN_SENT and not orig and f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                e.tcp_state = shared.TCP_SYN_RECV
            elif e.tcp_state == shared.TCP_SYN_RECV and orig and f & TCP_ACK:
                e.tcp_state = shared.TCP_ESTABLISHED
