"""Connection tracking under BPF_PROG_TEST_RUN: sequences through both programs, each
step checked against the reference model and against the expected verdict."""

from __future__ import annotations

import time

import pytest
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPerror,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
    UDPerror,
)

from tests.dataplane.conftest import from_yaml
from tests.dataplane.stateful import DROP, PASS, Pair

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
HOST4, PEER4, HOST6, PEER6 = "10.200.0.1", "10.200.0.2", "fd42:200::1", "fd42:200::2"

HOST_POLICY = """\
version: 1
policy: {ingress: drop, egress: drop}
conntrack: {max_entries: 4096}
rules:
  - {name: in-est, ct: [established, related], action: accept}
  - {name: in-invalid, ct: invalid, action: drop}
  - {name: in-ssh, proto: tcp, dport: 22, ct: new, action: accept}
  - {name: out-est, direction: egress, ct: [established, related], action: accept}
  - {name: out-smtp, direction: egress, proto: tcp, dport: 25, action: drop}
  - {name: out-new, direction: egress, ct: new, action: accept}
"""


def out4(l4):
    return bytes(E / IP(src=HOST4, dst=PEER4) / l4)


def in4(l4):
    return bytes(E / IP(src=PEER4, dst=HOST4) / l4)


def out6(l4):
    return bytes(E / IPv6(src=HOST6, dst=PEER6) / l4)


def in6(l4):
    return bytes(E / IPv6(src=PEER6, dst=HOST6) / l4)


def run(pair: Pair, steps):
    """steps: (direction, frame, expected verdict 'pass'|'drop', expected rule name or None)."""
    for i, (direction, frame, want, rule) in enumerate(steps):
        kernel, ref = pair.send(direction, frame)
        assert kernel == ref, f"step {i}: kernel {kernel} reference {ref}"
        names = [r.name for r in pair.ruleset.direction(direction)]
        got_rule = names[kernel[1]] if kernel[1] is not None else None
        expected = PASS[direction] if want == "pass" else DROP[direction]
        assert (kernel[0], got_rule) == (expected, rule), f"step {i}"


@pytest.fixture
def host():
    with Pair(from_yaml(HOST_POLICY)) as p:
        yield p


@pytest.mark.parametrize("out,inn", [(out4, in4), (out6, in6)], ids=["ipv4", "ipv6"])
def test_outgoing_tcp_connection_lifecycle(host, out, inn):
    run(host, [
        ("egress", out(TCP(sport=40000, dport=80, flags="S")), "pass", "out-new"),
        ("ingress", inn(TCP(sport=80, dport=40000, flags="SA")), "pass", "in-est"),
        ("egress", out(TCP(sport=40000, dport=80, flags="A")), "pass", "out-est"),
        ("egress", out(TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /")), "pass", "out-est"),
        ("ingress", inn(TCP(sport=80, dport=40000, flags="PA") / Raw(b"200 OK")), "pass", "in-est"),
        ("egress", out(TCP(sport=40000, dport=80, flags="FA")), "pass", "out-est"),
        ("ingress", inn(TCP(sport=80, dport=40000, flags="FA")), "pass", "in-est"),
        ("egress", out(TCP(sport=40000, dport=80, flags="A")), "pass", "out-est"),
        # the same ports again: a new connection after TIME_WAIT
        ("egress", out(TCP(sport=40000, dport=80, flags="S")), "pass", "out-new"),
    ])


def test_incoming_connection_accepted_by_rule_gets_its_replies_out(host):
    run(host, [
        ("ingress", in4(TCP(sport=50000, dport=22, flags="S")), "pass", "in-ssh"),
        ("egress", out4(TCP(sport=22, dport=50000, flags="SA")), "pass", "out-est"),
        ("ingress", in4(TCP(sport=50000, dport=22, flags="A")), "pass", "in-est"),
        # a port without a rule: the SYN is dropped and leaves no flow behind
        ("ingress", in4(TCP(sport=50001, dport=8080, flags="S")), "drop", None),
        ("egress", out4(TCP(sport=8080, dport=50001, flags="SA")), "drop", None),  # no flow: invalid
    ])


def test_out_of_state_packets_are_invalid(host):
    run(host, [
        ("ingress", in4(TCP(sport=80, dport=40001, flags="A")), "drop", "in-invalid"),
        ("ingress", in4(TCP(sport=80, dport=40001, flags="SA")), "drop", "in-invalid"),
        ("ingress", in6(TCP(sport=80, dport=40001, flags="R")), "drop", "in-invalid"),
        ("ingress", in4(ICMP(type=0, id=7)), "drop", "in-invalid"),  # an echo reply nobody asked for
        ("egress", out4(TCP(sport=40001, dport=80, flags="A")), "drop", None),  # invalid: no egress rule
        # an egress rule stops a port before the flow is made
        ("egress", out4(TCP(sport=40002, dport=25, flags="S")), "drop", "out-smtp"),
        ("ingress", in4(TCP(sport=25, dport=40002, flags="SA")), "drop", "in-invalid"),
    ])


@pytest.mark.parametrize("out,inn", [(out4, in4), (out6, in6)], ids=["ipv4", "ipv6"])
def test_udp_and_echo_replies_are_established(host, out, inn):
    v6 = out is out6
    req, rep = (ICMPv6EchoRequest(id=9), ICMPv6EchoReply(id=9)) if v6 else (ICMP(type=8, id=9), ICMP(type=0, id=9))
    run(host, [
        ("egress", out(UDP(sport=5353, dport=53) / Raw(b"q")), "pass", "out-new"),
        ("ingress", inn(UDP(sport=53, dport=5353) / Raw(b"a")), "pass", "in-est"),
        ("ingress", inn(UDP(sport=53, dport=5354) / Raw(b"a")), "drop", None),  # another port: new
        ("egress", out(req), "pass", "out-new"),
        ("ingress", inn(rep), "pass", "in-est"),
    ])


def test_icmp_errors_quoting_a_flow_are_related(host):
    quoted_udp = IPerror(src=HOST4, dst=PEER4) / UDPerror(sport=6000, dport=514)
    quoted_tcp6 = IPv6(src=HOST6, dst=PEER6) / TCP(sport=41000, dport=443, flags="S")
    run(host, [
        ("egress", out4(UDP(sport=6000, dport=514)), "pass", "out-new"),
        ("ingress", in4(ICMP(type=3, code=3) / quoted_udp), "pass", "in-est"),
        ("ingress", in4(ICMP(type=11, code=0) / IPerror(src=HOST4, dst=PEER4) / UDPerror(sport=6001, dport=514)),
         "drop", "in-invalid"),
        ("egress", out6(TCP(sport=41000, dport=443, flags="S")), "pass", "out-new"),
        ("ingress", in6(ICMPv6PacketTooBig(mtu=1280) / quoted_tcp6), "pass", "in-est"),
        ("ingress", in6(ICMPv6DestUnreach(code=4) / IPv6(src=HOST6, dst=PEER6) / UDP(sport=1, dport=2)),
         "drop", "in-invalid"),
        # a quote cut before its ports: no flow to relate to
        ("ingress", in4(ICMP(type=3, code=3) / Raw(bytes(quoted_udp)[:22])), "drop", "in-invalid"),
    ])


def test_non_first_fragments_and_other_protocols(host):
    run(host, [
        ("egress", bytes(E / IP(src=HOST4, dst=PEER4, proto=47) / Raw(b"x" * 8)), "pass", "out-new"),
        ("ingress", bytes(E / IP(src=PEER4, dst=HOST4, proto=47) / Raw(b"y" * 8)), "pass", "in-est"),
        ("ingress", bytes(E / IPv6(src=PEER6, dst=HOST6) / IPv6ExtHdrFragment(offset=5, nh=17) / Raw(b"z" * 8)),
         "drop", None),
    ])


def test_idle_flows_expire():
    rules = HOST_POLICY.replace("conntrack: {max_entries: 4096}",
                                "conntrack: {max_entries: 4096, timeouts: {udp: 1, icmp: 1}}")
    with Pair(from_yaml(rules)) as p:
        run(p, [
            ("egress", out4(UDP(sport=7000, dport=53)), "pass", "out-new"),
            ("ingress", in4(UDP(sport=53, dport=7000)), "pass", "in-est"),
            ("egress", out4(UDP(sport=7001, dport=53)), "pass", "out-new"),
        ])
        time.sleep(1.3)
        run(p, [
            # 7000 was replied: udp_stream (120 s) keeps it; 7001 never was: gone after 1 s
            ("ingress", in4(UDP(sport=53, dport=7000)), "pass", "in-est"),
            ("ingress", in4(UDP(sport=53, dport=7001)), "drop", None),
        ])


def test_table_records_state_and_counts(host):
    from bpfwall import conntrack

    run(host, [
        ("egress", out4(TCP(sport=42000, dport=80, flags="S")), "pass", "out-new"),
        ("ingress", in4(TCP(sport=80, dport=42000, flags="SA")), "pass", "in-est"),
        ("egress", out4(TCP(sport=42000, dport=80, flags="A")), "pass", "out-est"),
    ])
    table = conntrack.read_table(host.gens["ingress"].map_fds["conntrack"])
    assert len(table) == len(host.ref.table) == 1
    (_, entry), (ref_entry,) = table[0], host.ref.table.values()
    assert entry.tcp_state == ref_entry.tcp_state == 3  # established
    assert list(entry.packets) == ref_entry.packets == [2, 1]


def test_full_table_evicts_oldest_and_counts_it():
    import ctypes

    from bpfwall import conntrack, libbpf, shared

    rules = HOST_POLICY.replace("conntrack: {max_entries: 4096}", "conntrack: {max_entries: 1024}")
    with Pair(from_yaml(rules)) as p:
        flows = 3000
        for port in range(10000, 10000 + flows):
            p.gens["egress"].test_run(out4(UDP(sport=port, dport=53)))
        fd = p.gens["ingress"].map_fds["conntrack"]
        entries = len(conntrack.read_table(fd))
        cpus = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
        libbpf.map_lookup(p.gens["ingress"].map_fds["ct_stats"], ctypes.c_uint32(shared.CTS_CREATED), cpus)
        created = sum(cpus)
        assert entries <= 1024
        assert created == flows  # every flow was made; the LRU made room for the newest
        assert created - entries >= flows - 1024  # what `bpfwall conntrack` reports as evicted
        # the newest flow is still there: its reply is established
        verdict, _, _ = p.gens["ingress"].test_run(in4(UDP(sport=53, dport=10000 + flows - 1)))
        assert verdict == PASS["ingress"]
