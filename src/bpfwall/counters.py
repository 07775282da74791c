"""Counters that last across applies.

Each generation counts in its own per-CPU map, which starts at zero. So that a
re-apply does not wipe what an operator watches, apply carries the totals of
the old generation into the new state: a rule whose name and match are
unchanged keeps its packets and bytes (its action may change), a policy keeps
its counts while it stays the same, and drops by reason always carry. The
figures shown are the live counters plus what was carried.
"""

from __future__ import annotations

import json
from typing import Any

from . import shared

Counts = list[tuple[int, int]]  # (packets, bytes) per counter slot
DIRECTIONS = ("ingress", "egress")
POLICY_SLOTS = {"ingress": shared.CNT_POLICY_INGRESS, "egress": shared.CNT_POLICY_EGRESS}
REASON_SLOTS = (shared.CNT_MALFORMED, shared.CNT_NOT_IP, shared.CNT_REJECT_SENT, shared.CNT_REJECT_FAILED)


def zero() -> Counts:
    return [(0, 0)] * shared.N_COUNTERS


def rule_identity(rule: dict[str, Any]) -> str:
    """A rule as far as its counters are concerned: its name and match, not its action, log or line."""
    return json.dumps({k: v for k, v in rule.items() if k not in ("action", "line", "log")}, sort_keys=True)


def with_carried(live: dict[str, Counts], carried: dict[str, Any]) -> dict[str, Counts]:
    """Live counters plus what earlier generations carried into this one."""
    out = {}
    for direction in DIRECTIONS:
        counts = list(live.get(direction) or zero())
        for slot, (packets, nbytes) in (carried.get(direction) or {}).items():
            p, b = counts[int(slot)]
            counts[int(slot)] = (p + packets, b + nbytes)
        out[direction] = counts
    return out


def carry(old_rules: dict[str, Any], old_totals: dict[str, Counts], new_rules: dict[str, Any]) -> dict[str, Any]:
    """What the new generation starts from: {direction: {slot: [packets, bytes]}} (non-zero only).

    old_rules and new_rules are rule sets as Ruleset.to_json() gives them (the state keeps them so).
    """
    out: dict[str, Any] = {}
    for direction in DIRECTIONS:
        old_index = {rule_identity(r): i for i, r in enumerate(_in(old_rules, direction))}
        slots: dict[str, list[int]] = {}
        for i, rule in enumerate(_in(new_rules, direction)):
            j = old_index.get(rule_identity(rule))
            if j is not None and old_totals[direction][j] != (0, 0):
                slots[str(i)] = list(old_totals[direction][j])
        kept = list(REASON_SLOTS)
        if old_rules["policy"][direction] == new_rules["policy"][direction]:
            kept.append(POLICY_SLOTS[direction])
        for slot in kept:
            if old_totals[direction][slot] != (0, 0):
                slots[str(slot)] = list(old_totals[direction][slot])
        if slots:
            out[direction] = slots
    return out


def _in(ruleset: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    return [r for r in ruleset["rules"] if r["direction"] == direction]
