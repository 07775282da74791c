"""Jumbo frames under BPF_PROG_TEST_RUN: a frame longer than a page reaches bpfwall_ingress
(xdp.frags) in fragments, the first of them about 3,500 bytes. Headers are read from the
first fragment; lengths and counters take the whole frame."""

from __future__ import annotations

import struct

from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from bpfwall import config, shared
from tests.dataplane.conftest import loaded

RULES = config.loads("""
version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: ssh, proto: tcp, dport: 22, action: accept}
  - {name: syslog, proto: udp, dport: 514, action: reject}
""")
ETH = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")


def dest_options(next_header: int, length: int) -> bytes:
    """An IPv6 destination-options header of length bytes (a multiple of 8), padded with PadN."""
    pad = length - 2
    body = b""
    while pad:
        n = min(pad, 257)
        body += bytes([1, n - 2]) + bytes(n - 2) if n >= 2 else b"\0"
        pad -= n
    return struct.pack("BB", next_header, length // 8 - 1) + body


def test_a_jumbo_frame_is_judged_whole():
    big = bytes(ETH / IP(src="10.200.0.2", dst="10.200.0.1") / UDP(sport=4000, dport=514) / Raw(bytes(8000)))
    small = bytes(ETH / IP(src="10.200.0.2", dst="10.200.0.1") / TCP(sport=4000, dport=22, flags="S"))
    with loaded(RULES, {"lo": 1}) as gen:
        verdict, why, out = gen.judge(big, 0)
        assert (verdict, shared.DECISIONS[why.decision], why.rule) == (shared.XDP_TX, "rule", 1)
        # The answer is an ICMP port unreachable quoting the start of the datagram: the
        # fragments were cut away.
        assert 40 < len(out) < 700 and IP(out[14:]).proto == 1, len(out)
        assert gen.judge(small.ljust(9000, b"\0"), 0)[0] == shared.XDP_PASS
        verdict, _, _ = gen.test_run(big)
        assert verdict == shared.XDP_TX
        counted = gen.counters(blocks=1)[1]
        assert counted == (1, len(big)), counted  # the whole frame's bytes


def test_headers_past_the_first_fragment_make_the_frame_malformed():
    """Two 2 KiB destination-options headers put the TCP header beyond the first fragment:
    the frame is dropped as malformed, never judged by its ports."""
    payload = dest_options(60, 2048) + dest_options(6, 2048) + bytes(TCP(sport=4000, dport=22, flags="S"))
    ip6 = IPv6(src="fd42:200::2", dst="fd42:200::1", nh=60, plen=len(payload))
    frame = (bytes(ETH / ip6) + payload).ljust(6000, b"\0")
    with loaded(RULES, {"lo": 1}) as gen:
        verdict, why, _ = gen.judge(frame, 0)
        assert (verdict, shared.DECISIONS[why.decision]) == (shared.XDP_DROP, "malformed")
        # The same headers inside the first fragment are judged by their ports.
        short = dest_options(60, 1024) + dest_options(6, 1024) + bytes(TCP(sport=4000, dport=22, flags="S"))
        fits = (bytes(ETH / IPv6(src="fd42:200::2", dst="fd42:200::1", nh=60, plen=len(short))) + short)
        verdict, why, _ = gen.judge(fits.ljust(6000, b"\0"), 0)
        assert (verdict, shared.DECISIONS[why.decision], why.rule) == (shared.XDP_PASS, "rule", 0)
