"""The Python constants of shared.py equal those of bpf/shared.h."""

from __future__ import annotations

import os
import re

from bpfwall import shared

HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "bpf", "shared.h")


def header_constants() -> dict[str, int]:
    text = re.sub(r"/\*.*?\*/", "", open(HEADER).read(), flags=re.S)
    values: dict[str, int] = {}

    def ev(expr: str) -> int:
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]\b", r"\1", expr)
        return eval(expr, {}, dict(values))  # the header's own arithmetic, nothing else

    for name, expr in re.findall(r"#define[ \t]+(BPFWALL_\w+)[ \t]+(.+)", text):
        values[name] = ev(expr.strip())
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\};", text, flags=re.S):
        nxt = 0
        for item in filter(None, (x.strip() for x in body.split(","))):
            name, _, expr = (p.strip() for p in item.partition("="))
            nxt = ev(expr) if expr else nxt
            values[name] = nxt
            nxt += 1
    return values


def test_constants_match_header():
    h = header_constants()
    pairs = {
        "BPFWALL_MAX_RULES": shared.MAX_RULES, "BPFWALL_MAX_WORDS": shared.MAX_WORDS,
        "BPFWALL_MAX_SUMMARY": shared.MAX_SUMMARY, "BPFWALL_NO_RULE": shared.NO_RULE,
        "BPFWALL_F_IFACE": shared.F_IFACE, "BPFWALL_F_PROTO": shared.F_PROTO,
        "BPFWALL_F_SRC": shared.F_SRC, "BPFWALL_F_DST": shared.F_DST,
        "BPFWALL_F_SPORT": shared.F_SPORT, "BPFWALL_F_DPORT": shared.F_DPORT,
        "BPFWALL_F_TCPFLAGS": shared.F_TCPFLAGS, "BPFWALL_F_ICMP": shared.F_ICMP,
        "BPFWALL_N_FIELDS": shared.N_FIELDS,
        "BPFWALL_PORT_ABSENT": shared.PORT_ABSENT, "BPFWALL_TCPFLAGS_ABSENT": shared.TCPFLAGS_ABSENT,
        "BPFWALL_ICMP_ABSENT": shared.ICMP_ABSENT,
        "BPFWALL_PROTO_BASE": shared.PROTO_BASE, "BPFWALL_SPORT_BASE": shared.SPORT_BASE,
        "BPFWALL_DPORT_BASE": shared.DPORT_BASE, "BPFWALL_TCPFLAGS_BASE": shared.TCPFLAGS_BASE,
        "BPFWALL_ICMP_BASE": shared.ICMP_BASE, "BPFWALL_CLASS_SLOTS": shared.CLASS_SLOTS,
        "BPFWALL_ACT_ACCEPT": shared.ACT_ACCEPT, "BPFWALL_ACT_DROP": shared.ACT_DROP,
        "BPFWALL_ACT_REJECT": shared.ACT_REJECT,
        "BPFWALL_CNT_POLICY_INGRESS": shared.CNT_POLICY_INGRESS,
        "BPFWALL_CNT_POLICY_EGRESS": shared.CNT_POLICY_EGRESS,
        "BPFWALL_CNT_MALFORMED": shared.CNT_MALFORMED, "BPFWALL_CNT_NOT_IP": shared.CNT_NOT_IP,
        "BPFWALL_CNT_REJECT_SENT": shared.CNT_REJECT_SENT,
        "BPFWALL_CNT_REJECT_FAILED": shared.CNT_REJECT_FAILED,
        "BPFWALL_CNT_REJECT_SUPPRESSED": shared.CNT_REJECT_SUPPRESSED,
        "BPFWALL_REJECT_BUDGET": shared.REJECT_BUDGET,
        "BPFWALL_MAX_NEVER_BAN_SETS": shared.MAX_NEVER_BAN_SETS,
        "BPFWALL_IFACE_BLOCK_MASK": shared.IFACE_BLOCK_MASK,
        "BPFWALL_IFACE_ANSWER_REDIRECT": shared.IFACE_ANSWER_REDIRECT,
        "BPFWALL_N_COUNTERS": shared.N_COUNTERS,
        "BPFWALL_BY_RULE": shared.BY_RULE, "BPFWALL_BY_POLICY": shared.BY_POLICY,
        "BPFWALL_DIR_L1_SLOTS": shared.DIR_L1_SLOTS, "BPFWALL_DIR_CHUNK": shared.DIR_CHUNK,
        "BPFWALL_MAX_SETS": shared.MAX_SETS, "BPFWALL_LOG_RING_BYTES": shared.LOG_RING_BYTES,
        "BPFWALL_MAX_FIELD_SETS": shared.MAX_FIELD_SETS, "BPFWALL_DROP_SOURCES": shared.DROP_SOURCES,
        "BPFWALL_DROP_SOURCE_SAMPLE": shared.DROP_SOURCE_SAMPLE, "BPFWALL_MAX_IFACES": shared.MAX_IFACES,
        "BPFWALL_IFINDEX_SLOTS": shared.IFINDEX_SLOTS,
        "BPFWALL_BY_MALFORMED": shared.BY_MALFORMED, "BPFWALL_BY_NOT_IP": shared.BY_NOT_IP,
        "BPFWALL_BY_BAN": shared.BY_BAN, "BPFWALL_BANNED_RULE": shared.BANNED_RULE,
        "BPFWALL_ACT_BAN": shared.ACT_BAN, "BPFWALL_ACTION_MASK": shared.ACTION_MASK,
        "BPFWALL_PARAM_SHIFT": shared.PARAM_SHIFT, "BPFWALL_MAX_PARAMS": shared.MAX_PARAMS,
        "BPFWALL_CNT_BANNED": shared.CNT_BANNED, "BPFWALL_CNT_BANS_ADDED": shared.CNT_BANS_ADDED,
        "BPFWALL_CNT_SCAN_BANS": shared.CNT_SCAN_BANS, "BPFWALL_CNT_SYNCOOKIE_SENT": shared.CNT_SYNCOOKIE_SENT,
        "BPFWALL_CNT_SYNCOOKIE_FAILED": shared.CNT_SYNCOOKIE_FAILED,
        "BPFWALL_LIMIT_ON": shared.LIMIT_ON, "BPFWALL_LIMIT_PER_SOURCE": shared.LIMIT_PER_SOURCE,
        "BPFWALL_LIMIT_BYTES": shared.LIMIT_BYTES, "BPFWALL_LIMIT_OVER": shared.LIMIT_OVER,
        "BPFWALL_MAX_SYN_PORTS": shared.MAX_SYN_PORTS, "BPFWALL_SOURCE_BUCKETS": shared.SOURCE_BUCKETS,
        "BPFWALL_MAX_BANS": shared.MAX_BANS, "BPFWALL_SCAN_SOURCES": shared.SCAN_SOURCES,
        "BPFWALL_BAN_RULE": shared.BAN_RULE, "BPFWALL_BAN_SCAN": shared.BAN_SCAN,
"BPFWALL_TRACE_MAGIC": shared.TRACE_MAGIC,
    }
    for name, value in pairs.items():
        assert h[name] == value, name
