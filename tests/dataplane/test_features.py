"""One hand-built packet (scapy) per rule feature through the loaded object, IPv4 and IPv6.

Each case asserts the verdict and the deciding rule, and that the reference
model says the same.
"""

from __future__ import annotations

import pytest
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
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    IPOption_NOP,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    UDPerror,
)

from bpfwall import reference, shared
from tests.dataplane.conftest import from_yaml, loaded

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
C4, S4 = "10.200.0.2", "10.200.0.1"
C6, S6 = "fd42:200::2", "fd42:200::1"

RULES = """\
version: 1
policy: {ingress: drop}
sets:
  bad: {type: cidr, elements: [192.0.2.0/24, "2001:db8:bad::/48"]}
  web: {type: port, elements: [80, 443, "8000-8100"]}
rules:
  - {name: bad, src: "@bad", action: drop}
  - {name: ssh, proto: tcp, dport: 22, src: [10.200.0.0/16, "fd42:200::/64"], action: accept}
  - {name: web, proto: tcp, dport: "@web", action: accept}
  - {name: to-dst, dst: [10.200.9.9, "fd42:200::99"], action: accept}
  - {name: syn-only, proto: tcp, dport: 2222, tcp_flags: "syn,!ack", action: accept}
  - {name: reject-imap, proto: tcp, dport: 143, action: reject}
  - {name: dns, proto: [udp, sctp], dport: 53, action: accept}
  - {name: from-ntp, proto: udp, sport: 123, action: accept}
  - {name: reject-syslog, proto: udp, dport: 514, action: reject}
  - {name: ping, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept}
  - {name: unreach-port, proto: icmp, icmp_type: destination-unreachable, icmp_code: port-unreachable,
     action: accept}
  - {name: gre, proto: gre, family: ipv4, action: accept}
  - {name: lo-only, interfaces: lo, proto: udp, dport: 7777, action: accept}
  - {name: other-only, interfaces: other0, proto: udp, dport: 7778, action: accept}
"""

CASES = [
    # (id, frame, verdict, rule name or None for the policy)
    ("ssh v4", E / IP(src=C4, dst=S4) / TCP(dport=22, flags="S"), shared.XDP_PASS, "ssh"),
    ("ssh v6", E / IPv6(src=C6, dst=S6) / TCP(dport=22, flags="S"), shared.XDP_PASS, "ssh"),
    ("ssh from outside", E / IP(src="198.51.100.1", dst=S4) / TCP(dport=22), shared.XDP_DROP, None),
    ("set src v4 first", E / IP(src="192.0.2.7", dst=S4) / TCP(dport=22), shared.XDP_DROP, "bad"),
    ("set src v6", E / IPv6(src="2001:db8:bad::1", dst=S6) / UDP(dport=53), shared.XDP_DROP, "bad"),
    ("port set", E / IP(src=C4, dst=S4) / TCP(dport=443), shared.XDP_PASS, "web"),
    ("port set range", E / IPv6(src=C6, dst=S6) / TCP(dport=8050), shared.XDP_PASS, "web"),
    ("port past range", E / IP(src=C4, dst=S4) / TCP(dport=8101), shared.XDP_DROP, None),
    ("dst list v4", E / IP(src="1.2.3.4", dst="10.200.9.9") / UDP(dport=9), shared.XDP_PASS, "to-dst"),
    ("dst list v6", E / IPv6(src="2001:db9::1", dst="fd42:200::99") / UDP(dport=9), shared.XDP_PASS, "to-dst"),
    ("flags syn", E / IP(src=C4, dst=S4) / TCP(dport=2222, flags="S"), shared.XDP_PASS, "syn-only"),
    ("flags syn+ack", E / IP(src=C4, dst=S4) / TCP(dport=2222, flags="SA"), shared.XDP_DROP, None),
    ("udp dns", E / IP(src=C4, dst=S4) / UDP(dport=53), shared.XDP_PASS, "dns"),
    ("sctp dns", E / IPv6(src=C6, dst=S6) / SCTP(dport=53), shared.XDP_PASS, "dns"),
    ("tcp 53 not dns", E / IP(src=C4, dst=S4) / TCP(dport=53), shared.XDP_DROP, None),
    ("sport", E / IP(src=C4, dst=S4) / UDP(sport=123, dport=40000), shared.XDP_PASS, "from-ntp"),
    ("echo v4", E / IP(src=C4, dst=S4) / ICMP(type=8), shared.XDP_PASS, "ping"),
    ("echo v6", E / IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(), shared.XDP_PASS, "ping"),
    ("echo reply v4", E / IP(src=C4, dst=S4) / ICMP(type=0), shared.XDP_DROP, None),
    ("icmp code", E / IP(src=C4, dst=S4) / ICMP(type=3, code=3) / IP(src=S4, dst=C4) / UDPerror(),
     shared.XDP_PASS, "unreach-port"),
    ("icmp other code", E / IP(src=C4, dst=S4) / ICMP(type=3, code=1), shared.XDP_DROP, None),
    ("v6 unreach not v4 rule", E / IPv6(src=C6, dst=S6) / ICMPv6DestUnreach(code=4), shared.XDP_DROP, None),
    ("proto number + family", E / IP(src=C4, dst=S4, proto=47) / Raw(b"x" * 8), shared.XDP_PASS, "gre"),
    ("family excludes v6", E / IPv6(src=C6, dst=S6, nh=47) / Raw(b"x" * 8), shared.XDP_DROP, None),
    ("interface lo", E / IP(src=C4, dst=S4) / UDP(dport=7777), shared.XDP_PASS, "lo-only"),
    ("other interface", E / IP(src=C4, dst=S4) / UDP(dport=7778), shared.XDP_DROP, None),
    ("essential ND", E / IPv6(src=C6, dst="ff02::1:ff00:1") / ICMPv6ND_NS(tgt=S6), shared.XDP_PASS,
     "*essential-icmpv6"),
    ("essential PTB", E / IPv6(src=C6, dst=S6) / ICMPv6PacketTooBig(), shared.XDP_PASS, "*essential-icmpv6"),
    ("arp passes", Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(), shared.XDP_PASS, None),
    ("one vlan", E / Dot1Q(vlan=5) / IP(src=C4, dst=S4) / TCP(dport=22), shared.XDP_PASS, "ssh"),
    ("two vlans", E / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IPv6(src=C6, dst=S6) / TCP(dport=22), shared.XDP_PASS,
     "ssh"),
    ("ipv4 options", E / IP(src=C4, dst=S4, options=[IPOption_NOP()] * 8) / TCP(dport=22), shared.XDP_PASS,
     "ssh"),
    ("v6 hbh+dst+rt", E / IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrRouting() / TCP(dport=22), shared.XDP_PASS, "ssh"),
    ("v6 first fragment", E / IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=0, m=1) / UDP(dport=53),
     shared.XDP_PASS, "dns"),
    ("v6 later fragment: no ports", E / IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=10, nh=17) /
     Raw(b"x" * 16), shared.XDP_DROP, None),
    ("v4 later fragment: no ports", E / IP(src=C4, dst=S4, frag=10, proto=17) / Raw(b"x" * 16),
     shared.XDP_DROP, None),
    ("v4 later fragment: proto-only rule", E / IP(src=C4, dst=S4, frag=10, proto=47) / Raw(b"x" * 16),
     shared.XDP_PASS, "gre"),
    ("v6 too many ext headers", E / IPv6(src=C6, dst=S6) / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP(dport=22), shared.XDP_DROP, None),
    ("v6 eight ext headers is fine", E / IPv6(src=C6, dst=S6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP(dport=22), shared.XDP_PASS, "ssh"),
]


@pytest.fixture(scope="module")
def gen():
    with loaded(from_yaml(RULES), {"lo": 1}) as g:
        yield g


@pytest.mark.parametrize("frame,verdict,rule", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_feature(gen, frame, verdict, rule):
    ruleset = from_yaml(RULES)
    raw = bytes(frame)
    got, why, _ = gen.judge(raw, 0)
    names = [r.name for r in ruleset.ingress()]
    got_rule = names[why.rule] if why.rule != shared.NO_RULE else None
    assert (got, got_rule) == (verdict, rule)
    ref = reference.decide(ruleset, raw, "lo")
    assert (ref.verdict, names[ref.rule] if ref.rule is not None else None) == (verdict, rule)


def test_malformed_at_every_header_boundary(gen):
    """Every truncation of a deep frame is judged like the reference, and cuts inside headers are malformed."""
    ruleset = from_yaml(RULES)
    frames = [
        E / Dot1Q(vlan=1) / IP(src=C4, dst=S4, options=[IPOption_NOP()] * 4) / TCP(dport=22, options=[("MSS", 1460)]),
        E / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() /
        IPv6ExtHdrFragment(offset=0) / UDP(dport=53),
        E / IP(src=C4, dst=S4) / ICMP(type=8),
        E / IPv6(src=C6, dst=S6) / SCTP(dport=53),
    ]
    for frame in frames:
        raw = bytes(frame)
        for cut in range(len(raw) + 1):
            piece = raw[:cut]
            if len(piece) < 14:
                continue  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
            got, why, _ = gen.judge(piece, 0)
            ref = reference.decide(ruleset, piece, "lo")
            assert got == ref.verdict, (frame.summary(), cut)
            kind = shared.DECISIONS[why.decision]
            assert kind == ref.kind, (frame.summary(), cut)
            if cut < len(raw):
                assert kind == "malformed", (frame.summary(), cut)


def test_ipv4_bad_ihl_and_version_are_malformed(gen):
    for raw in (bytes(E / IP(src=C4, dst=S4, ihl=4) / TCP(dport=22)),
                bytes(E / IP(src=C4, dst=S4, version=5) / TCP(dport=22)),
                bytes(E / IP(src=C4, dst=S4, len=10) / TCP(dport=22)),
                bytes(E / IPv6(src=C6, dst=S6, plen=500) / TCP(dport=22))):
        got, why, _ = gen.judge(raw, 0)
        assert got == shared.XDP_DROP and why.decision == shared.BY_MALFORMED


def test_counters_count_traffic_not_explain(gen):
    before = gen.counters(blocks=1)
    raw = bytes(E / IP(src=C4, dst=S4) / UDP(dport=53) / Raw(b"x" * 10))
    for _ in range(7):
        gen.test_run(raw)
    for _ in range(3):
        gen.judge(raw)  # marked for explanation: not traffic
    after = gen.counters(blocks=1)
    ruleset = from_yaml(RULES)
    i = [r.name for r in ruleset.ingress()].index("dns")
    assert after[i][0] - before[i][0] == 7
    assert after[i][1] - before[i][1] == 7 * len(raw)


def test_reject_tcp_answers_rst(gen):
    syn = E / IP(src=C4, dst=S4, options=[IPOption_NOP()] * 4) / TCP(sport=40000, dport=143, flags="S", seq=1000)
    verdict, _, out = gen.judge(bytes(syn), 0)
    assert verdict == shared.XDP_TX
    reply = Ether(out)
    assert reply.dst == syn.src and reply[IP].src == S4 and reply[IP].dst == C4
    assert reply[TCP].flags == "RA" and reply[TCP].ack == 1001 and reply[TCP].dport == 40000
    assert valid_checksums(reply)

    ack = E / IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=143, flags="A", seq=5, ack=777)
    verdict, _, out = gen.judge(bytes(ack), 0)
    reply = Ether(out)
    assert verdict == shared.XDP_TX and reply[TCP].flags == "R" and reply[TCP].seq == 777
    assert valid_checksums(reply)


def test_reject_udp_answers_port_unreachable(gen):
    dgram = E / Dot1Q(vlan=7) / IP(src=C4, dst=S4) / UDP(sport=5000, dport=514) / Raw(b"y" * 30)
    verdict, _, out = gen.judge(bytes(dgram), 0)
    assert verdict == shared.XDP_TX
    reply = Ether(out)
    assert reply[Dot1Q].vlan == 7
    assert reply[ICMP].type == 3 and reply[ICMP].code == 3
    assert reply[ICMP].payload.src == C4  # the quote starts with the offending header
    assert valid_checksums(reply)

    dgram6 = E / IPv6(src=C6, dst=S6) / UDP(sport=5000, dport=514) / Raw(b"y" * 30)
    verdict, _, out = gen.judge(bytes(dgram6), 0)
    reply = Ether(out)
    assert verdict == shared.XDP_TX
    assert reply[ICMPv6DestUnreach].code == 4 and reply[IPv6].dst == C6
    assert valid_checksums(reply)


def test_reject_never_answers_rst_multicast_or_fragments(gen):
    for frame in (E / IP(src=C4, dst=S4) / TCP(dport=143, flags="R"),
                  Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src=C4, dst=S4) / UDP(dport=514),
                  E / IP(src=C4, dst="224.0.0.9") / UDP(dport=514)):
        verdict, why, _ = gen.judge(bytes(frame), 0)
        assert verdict == shared.XDP_DROP and why.decision == shared.BY_RULE


def valid_checksums(frame) -> bool:
    """Recomputing every checksum with scapy leaves the bytes unchanged."""
    raw = bytes(frame)
    copy = frame.copy()
    for layer in copy.layers():
        inst = copy.getlayer(layer)
        for field in ("chksum", "cksum"):
            if inst is not None and field in inst.fields:
                delattr(inst, field)
    return bytes(copy) == raw
