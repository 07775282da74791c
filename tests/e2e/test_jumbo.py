"""Jumbo frames: a lab whose veth pair runs at MTU 9000, protected in native mode.

bpfwall's XDP program takes frames in fragments (xdp.frags), so the kernel lets it attach
natively above a page of MTU. Rules are judged for small and 8,000-byte frames, TCP and UDP,
IPv4 and IPv6, and rejects are still answered from XDP.
"""

from __future__ import annotations

import json

import pytest

from bpfwall import scope as scope_mod
from bpfwall.lab import Lab
from tests.e2e.conftest import apply, bpfwall, stats, write

OPEN_TCP, CLOSED_TCP, OPEN_UDP, CLOSED_UDP = 8080, 8081, 9999, 9998
BIG = 8000


@pytest.fixture
def jumbo():
    scope_mod.ensure_bpffs()
    with Lab("jumbo", mtu=9000) as lab:
        for v6 in (False, True):
            lab.tcp_echo_server(OPEN_TCP, v6=v6)
            lab.tcp_echo_server(CLOSED_TCP, v6=v6)
            lab.udp_server(OPEN_UDP, v6=v6)
            lab.udp_server(CLOSED_UDP, v6=v6)
        yield lab


def test_a_jumbo_frame_lab_is_protected_in_native_mode(jumbo, tmp_path):
    rules = write(tmp_path, f"""
version: 1
policy: {{ingress: drop, egress: accept}}
rules:
  - {{name: est, ct: [established, related], action: accept}}
  - {{name: tcp-open, proto: tcp, dport: {OPEN_TCP}, action: accept}}
  - {{name: tcp-closed, proto: tcp, dport: {CLOSED_TCP}, action: reject}}
  - {{name: udp-open, proto: udp, dport: {OPEN_UDP}, action: accept}}
  - {{name: udp-closed, proto: udp, dport: {CLOSED_UDP}, action: reject}}
""")
    apply(jumbo, rules, "--mode", "native")
    status = json.loads(bpfwall("status", "--netns", jumbo.server_ns, "--json").stdout)
    assert [i["mode"] for i in status["interfaces"]] == ["native"], status
    for v6 in (False, True):
        for size in (4, BIG):
            assert jumbo.udp_query(OPEN_UDP, v6=v6, size=size) == "answered", (v6, size)
            assert jumbo.udp_query(CLOSED_UDP, v6=v6, size=size) == "refused", (v6, size)
            assert jumbo.tcp_exchange(OPEN_TCP, size, v6=v6) == "echoed", (v6, size)
        assert jumbo.tcp_exchange(CLOSED_TCP, BIG, v6=v6) == "refused", v6
    got = stats(jumbo)
    counts = {r["name"]: r for r in got["rules"]}
    # Each refused big datagram was judged whole: its bytes are counted, and answered.
    assert counts["udp-closed"]["packets"] == 4 and counts["udp-closed"]["bytes"] > 2 * BIG, counts
    assert got["drops"].get("malformed", 0) == 0, got["drops"]
