"""Packet logs under BPF_PROG_TEST_RUN: the per-rule limit holds under a flood, what it held
back is counted, rules without log write nothing, and every field of a record is right."""

from __future__ import annotations

import ctypes
import time

from scapy.all import IP, TCP, UDP, Ether

from bpfwall import libbpf, logs, shared
from bpfwall.config import loads
from tests.dataplane.conftest import loaded

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
RULES = """\
version: 1
rules:
  - {name: quiet, proto: udp, dport: 53, action: accept}
  - {name: noisy, proto: udp, dport: 9, action: drop, log: 5/second}
  - {name: ssh, proto: tcp, dport: 22, action: accept, log: true}
"""


def drain(gen) -> list[shared.LogRecord]:
    out = []
    ring = libbpf.RingBuffer(gen.map_fds["log_ring"], lambda raw: out.append(shared.LogRecord.from_buffer_copy(raw)))
    try:
        ring.consume()
    finally:
        ring.close()
    return out


def suppressed(gen, rule: int) -> int:
    st = shared.LogState()
    libbpf.map_lookup(gen.map_fds["log_state"], ctypes.c_uint32(rule), st)
    return st.suppressed


def test_a_flood_yields_no_more_records_than_the_limit():
    with loaded(loads(RULES, "t.yaml")) as gen:
        frame = bytes(E / IP(src="10.200.0.2", dst="10.200.0.1") / UDP(sport=1234, dport=9))
        t0 = time.monotonic()
        gen.test_run(frame, repeat=10_000)
        elapsed = time.monotonic() - t0
        records = drain(gen)
        allowed = 5 + 5 * elapsed + 1  # the burst, the rate over the run, one of rounding
        assert 1 <= len(records) <= allowed
        assert len(records) + suppressed(gen, 1) == 10_000
        assert {r.rule for r in records} == {1}
        # a rule without log writes nothing, and holds nothing back
        gen.test_run(bytes(E / IP(src="10.200.0.2", dst="10.200.0.1") / UDP(dport=53)), repeat=100)
        assert drain(gen) == [] and suppressed(gen, 0) == 0


def test_record_fields():
    with loaded(loads(RULES, "t.yaml")) as gen:
        frame = bytes(E / IP(src="10.200.0.2", dst="10.200.0.1") / TCP(sport=40000, dport=22, flags="S"))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        gen.test_run(frame, ifindex=1)
        (rec,) = drain(gen)
        assert before <= rec.time_ns <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        assert (rec.rule, rec.ifindex, rec.len, rec.direction, rec.action) == (2, 1, len(frame), 0,
                                                                                 shared.ACT_ACCEPT)
        assert (rec.is_ipv6, rec.proto, rec.has_l4, rec.tcp_flags) == (0, 6, 1, 0x02)
        assert (rec.sport, rec.dport) == (40000, 22)
        assert bytes(rec.saddr)[:4] == bytes([10, 200, 0, 2]) and bytes(rec.daddr)[:4] == bytes([10, 200, 0, 1])
        d = logs.Describer.__new__(logs.Describer)
        d.state, d.rules, d.ifnames = None, {}, {1: "lo"}
        d._refresh = lambda: None
        text = logs.text(d.describe(bytes(rec)))
        assert "10.200.0.2:40000 -> 10.200.0.1:22" in text and "flags syn" in text and "ACCEPT" in text
