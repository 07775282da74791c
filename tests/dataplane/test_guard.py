"""Limits, bans and the port-scan watch: the kernel against the reference model on a
clock the test moves, and the exact numbers of the token bucket.

Frames run as traffic (they pay into buckets and can ban) yet report their decision
(TRACE_MAGIC); the test clock makes every run reproducible.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, Raw

from bpfwall import bans, reference, shared
from bpfwall.conntrack import now_ns
from bpfwall.ruleset import Ruleset
from tests.dataplane.conftest import from_yaml, loaded
from tests.profile import examples
from tests.strategies import guard_steps, guarded_rulesets

KINDS = shared.DECISIONS
T0 = 1_000_000_000_000  # the test clock's start: far from zero, which means "real time"
SEC = 1_000_000_000


def run(gen, frame: bytes) -> tuple[str, int | None, int]:
    verdict, why, _ = gen.judge(frame, 0, traffic=True)
    rule = why.rule if why.rule < shared.MAX_RULES else None
    return KINDS[why.decision], rule, verdict


@settings(max_examples=examples(150), print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(guarded_rulesets(), st.lists(guard_steps(), min_size=10, max_size=40))
def test_limits_bans_and_scans_agree_with_reference(ruleset: Ruleset, steps: list[tuple[int, bytes]]):
    guard = reference.Guard()
    # The connection table keeps real (coarse) time; the guard the test's clock.
    ct = reference.Conntrack(ruleset.conntrack.get("timeouts"))
    now = T0
    with loaded(ruleset, {"lo": 1}) as gen:
        for i, (step, frame) in enumerate(steps):
            now += step
            gen.set_clock(now)
            got = run(gen, frame)
            want = reference.decide(ruleset, frame, "lo", ct=ct, now=now_ns(), guard=guard, clock=now)
            assert got == (want.kind, want.rule, want.verdict), (i, frame.hex(), want.reason)


def frame4(src: str = "10.200.1.5", dport: int = 80, size: int = 0, proto: str = "tcp") -> bytes:
    upper = {"tcp": TCP(sport=40000, dport=dport, flags="S"), "udp": UDP(sport=40000, dport=dport),
             "icmp": ICMP(type=8)}[proto]
    return bytes(Ether() / IP(src=src, dst="10.200.0.1") / upper / Raw(b"x" * size))


def admitted(gen, frames: list[bytes], rule: int = 0) -> int:
    return sum(run(gen, f)[1] == rule for f in frames)


RATE = """
version: 1
policy: {ingress: drop}
rules:
  - {name: ping, proto: icmp, action: accept, limit: {rate: 10/second, burst: 4}}
"""


def test_bucket_admits_burst_then_rate():
    """Burst 4 at one instant; then 10/second: one packet each 100 ms, and a second's
    wait refills the burst, not more. Over the limit the packet falls to the policy."""
    with loaded(from_yaml(RATE)) as gen:
        gen.set_clock(T0)
        ping = frame4(proto="icmp")
        assert admitted(gen, [ping] * 10) == 4
        assert run(gen, ping) == ("policy", None, shared.XDP_DROP)
        t = T0
        for _ in range(20):  # 100 ms apart: exactly the rate, all pass
            t += SEC // 10
            gen.set_clock(t)
            assert run(gen, ping)[1] == 0
        gen.set_clock(t + 60 * SEC)  # a long pause: the burst again, no more
        assert admitted(gen, [ping] * 10) == 4


def test_per_source_buckets_are_independent():
    text = """
version: 1
policy: {ingress: drop}
rules:
  - {name: web, proto: tcp, dport: 80, action: accept, limit: {rate: 1/minute, burst: 2, per: source}}
"""
    with loaded(from_yaml(text)) as gen:
        gen.set_clock(T0)
        a, b = frame4("10.200.1.5"), frame4("10.200.1.6")
        assert admitted(gen, [a] * 5) == 2
        assert admitted(gen, [b] * 5) == 2  # a's flood leaves b's bucket full
        six1 = bytes(Ether() / IPv6(src="fd42:200::1:5", dst="fd42:200::1") / TCP(dport=80, flags="S"))
        six2 = bytes(Ether() / IPv6(src="fd42:200::2:5", dst="fd42:200::1") / TCP(dport=80, flags="S"))
        assert admitted(gen, [six1, six2] * 3) == 2  # one /64, one bucket


def test_byte_limit_counts_bytes():
    text = """
version: 1
policy: {ingress: drop}
rules:
  - {name: udp, proto: udp, action: accept, limit: {rate: 1000/second, burst: 1000, bytes: true}}
"""
    with loaded(from_yaml(text)) as gen:
        gen.set_clock(T0)
        big = frame4(proto="udp", size=458)  # 500 bytes with its headers
        assert len(big) == 500
        assert admitted(gen, [big] * 5) == 2
        gen.set_clock(T0 + SEC // 2)  # half a second: 500 bytes more
        assert admitted(gen, [big] * 5) == 1


BAN = """
version: 1
policy: {ingress: accept}
rules:
  - {name: ssh-flood, proto: tcp, dport: 22, tcp_flags: "syn,!ack",
     limit: {rate: 3/second, burst: 3, per: source, over: true}, action: ban, ban_for: 10s}
"""


def test_over_limit_bans_the_source_until_it_expires():
    with loaded(from_yaml(BAN)) as gen:
        gen.set_clock(T0)
        syn, other = frame4(dport=22), frame4(src="10.200.1.6", dport=22)
        assert [run(gen, syn)[0] for _ in range(3)] == ["policy"] * 3  # within the rate
        assert run(gen, syn) == ("rule", 0, shared.XDP_DROP)  # over: banned now
        assert run(gen, frame4(dport=80)) == ("banned", None, shared.XDP_DROP)  # every port
        assert run(gen, other)[0] == "policy"  # others are not
        counts = gen.counters(blocks=1)
        assert counts[shared.CNT_BANS_ADDED][0] == 1 and counts[shared.CNT_BANNED][0] == 1
        gen.set_clock(T0 + 10 * SEC - 1)
        assert run(gen, frame4(dport=80))[0] == "banned"
        gen.set_clock(T0 + 10 * SEC + 1)
        assert run(gen, frame4(dport=80))[0] == "policy"  # expired, and removed
        assert run(gen, frame4(dport=80))[0] == "policy"


def test_port_scan_is_banned():
    text = """
version: 1
policy: {ingress: drop}
conntrack: {port_scan: {ports: 5, window: 10s, ban_for: 1m}}
rules:
  - {name: web, proto: tcp, dport: 80, action: accept}
"""
    with loaded(from_yaml(text)) as gen:
        gen.set_clock(T0)
        for port in range(1000, 1005):  # five closed ports: at the threshold, not over
            assert run(gen, frame4(dport=port))[0] == "policy"
        assert run(gen, frame4(dport=80))[0] == "rule"  # open ports never count
        assert run(gen, frame4(dport=1002))[0] == "policy"  # a port seen before: still five
        assert run(gen, frame4(dport=1005))[0] == "policy"  # the sixth: banned
        assert run(gen, frame4(dport=80))[0] == "banned"
        assert gen.counters(blocks=1)[shared.CNT_SCAN_BANS][0] == 1
        # a slow scan, one port a window, is never banned
        for i, port in enumerate(range(2000, 2010)):
            gen.set_clock(T0 + (61 + 11 * i) * SEC)
            assert run(gen, frame4(src="10.200.1.7", dport=port))[0] == "policy"


def test_explain_pays_nothing():
    """A frame sent by explain sees the limit but takes no token and bans nobody."""
    with loaded(from_yaml(RATE)) as gen:
        gen.set_clock(T0)
        ping = frame4(proto="icmp")
        for _ in range(10):
            assert gen.judge(ping)[1].rule == 0
        assert admitted(gen, [ping] * 10) == 4


BUDGET = """
version: 1
policy: {ingress: accept}
conntrack:
  reject_budget: {rate: 10/second, burst: 5, per_source: 1/second, source_burst: 3}
rules:
  - {name: closed, proto: [tcp, udp], dport: 9, action: reject}
"""


def test_reject_budget_per_source_then_overall():
    """Each source gets its burst of answers, then one a second; all sources together get
    the overall burst, then its rate. Over budget a reject is a drop, still by its rule."""
    with loaded(from_yaml(BUDGET)) as gen:
        gen.set_clock(T0)
        one = frame4("10.200.1.5", dport=9)
        verdicts = [run(gen, one) for _ in range(6)]
        assert [v[2] for v in verdicts] == [shared.XDP_TX] * 3 + [shared.XDP_DROP] * 3
        assert {v[:2] for v in verdicts} == {("rule", 0)}
        # Two more sources: the overall burst of 5 has 2 answers left.
        others = [frame4(f"10.200.1.{i}", dport=9, proto="udp") for i in (6, 7)]
        assert sum(run(gen, f)[2] == shared.XDP_TX for f in others * 3) == 2
        gen.set_clock(T0 + SEC)  # a second: the first source has one more answer
        assert [run(gen, one)[2] for _ in range(2)] == [shared.XDP_TX, shared.XDP_DROP]


def test_explain_does_not_spend_the_reject_budget():
    with loaded(from_yaml(BUDGET)) as gen:
        gen.set_clock(T0)
        one = frame4("10.200.1.5", dport=9)
        for _ in range(10):
            assert gen.judge(one, 0)[0] == shared.XDP_TX  # explain: looks, never pays
        assert [run(gen, one)[2] for _ in range(4)] == [shared.XDP_TX] * 3 + [shared.XDP_DROP]
        assert gen.judge(one, 0)[0] == shared.XDP_DROP  # and sees the empty bucket


NEVER_BAN = """
version: 1
policy: {ingress: accept}
sets:
  monitoring: {type: cidr, elements: ["fd42:200::/64"]}
never_ban: [10.200.1.5, "@monitoring"]
conntrack:
  port_scan: {ports: 1, window: 10s, ban_for: 10m}
rules:
  - {name: trap, proto: tcp, dport: 23, action: ban, ban_for: 1h}
  - {name: closed, proto: tcp, dport: [25, 26, 27], action: drop}
"""


def test_never_ban_sources_are_never_banned():
    """A ban rule still drops their packets, and they may scan, but no ban is made."""
    with loaded(from_yaml(NEVER_BAN)) as gen:
        gen.set_clock(T0)
        six = bytes(Ether() / IPv6(src="fd42:200::9", dst="fd42:200::1") / TCP(dport=23, flags="S"))
        for frame in (frame4("10.200.1.5", dport=23), six):
            assert run(gen, frame) == ("rule", 0, shared.XDP_DROP)
            assert run(gen, frame)[0] == "rule"  # not "banned"
        for port in (25, 26, 27):  # a scan of three closed ports, over the limit of one
            assert run(gen, frame4("10.200.1.5", dport=port)) == ("rule", 1, shared.XDP_DROP)
        assert run(gen, frame4("10.200.1.5", dport=80)) == ("policy", None, shared.XDP_PASS)
        # anyone else is banned as before
        assert run(gen, frame4("10.200.1.6", dport=23)) == ("rule", 0, shared.XDP_DROP)
        assert run(gen, frame4("10.200.1.6", dport=80)) == ("banned", None, shared.XDP_DROP)


EVICTION = """
version: 1
policy: {ingress: drop}
conntrack:
  port_scan: {ports: 1, window: 10m, ban_for: 10m}
rules:
  - {name: trap, proto: tcp, dport: 23, action: ban, ban_for: 1h}
"""


_SYNS: dict[int, bytes] = {}


def _syn(src: int, dport: int) -> bytes:
    """A SYN from IPv4 source src (an int); checksums are left as the template's, which
    the data plane does not check. These frames only ever run under BPF_PROG_TEST_RUN."""
    if dport not in _SYNS:
        _SYNS[dport] = frame4("0.0.0.0", dport=dport)
    template = _SYNS[dport]
    return template[:26] + src.to_bytes(4, "big") + template[30:]


def _bans_by_reason(gen) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in bans.TABLES:
        for _, ban in bans._entries(gen.map_fds[table]):
            reason = shared.BAN_REASONS[ban.reason]
            out[reason] = out.get(reason, 0) + 1
    return out


def test_rule_bans_survive_a_flood_of_spoofed_scan_bans():
    """Scan bans have an LRU table of their own: forged scans from ever more sources push
    out older scan bans, never the rules' bans. Printed for the record."""
    rule_bans, base = 1000, 10 << 24 | 200 << 16  # 10.200.0.0 up: the rule-banned sources
    print()
    with loaded(from_yaml(EVICTION)) as gen:
        gen.set_clock(T0)
        for i in range(rule_bans):
            run(gen, _syn(base + i, 23))
        assert _bans_by_reason(gen) == {"rule": rule_bans}
        flooded = 0
        for n in (16_384, 65_536, 131_072):
            for i in range(flooded, n):  # two closed ports each, over the scan limit of one
                src = 11 << 24 | i  # spoofed sources 11.0.0.0 up, in frames that never leave
                run(gen, _syn(src, 1000))
                run(gen, _syn(src, 1001))
            flooded = n
            got = _bans_by_reason(gen)
            print(f"after {n:,} spoofed scan bans: {got.get('rule', 0):,} of {rule_bans:,} rule bans remain, "
                  f"{got.get('port-scan', 0):,} scan bans in the table")
            assert got.get("rule", 0) == rule_bans
            assert got.get("port-scan", 0) <= shared.MAX_BANS
