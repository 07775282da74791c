"""Counters that last across applies.

Each generation counts in its own per-CPU map, which starts at zero. So that a
re-apply does not wipe what an operator watches, apply carries the totals of
the old generation into the new state: a rule whose name and match are
unchanged keeps its packets and bytes (its action may change), a policy keeps
its counts while it stays the same, and drops by reason always carry. The
figures shown are the live counters plus what was carried.
"""

from __future__ import annotations

from typing import Any

from . import shared

Counts = list[tuple[int, int]]  # (packets, bytes) per counter slot
DIRECTIONS = ("ingress", "egress")
POLICY_SLOTS = {"ingress": shared.CNT_POLICY_INGRESS, "egress": shared.CNT_POLICY_EGRESS}
REASON_SLOTS = (shared.CNT_MALFORMED, shared.CNT_NOT_IP, shared.CNT_REJECT_SENT, shared.CNT_REJECT_FAILED,
                shared.CNT_BANNED, shared.CNT_BANS_ADDED, shared.CNT_SCAN_BANS, shared.CNT_SYNCOOKIE_SENT,
                shared.CNT_SYNCOOKIE_FAILED, shared.CNT_REJECT_SUPPRESSED)


def zero() -> Counts:
    return [(0, 0)] * shared.N_COUNTERS


def same_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two rules count the same packets: the same name and match; action, log and line may differ."""
    if a == b:
        return True
    return ({k: v for k, v in a.items() if k not in _NOT_IDENTITY}
            == {k: v for k, v in b.items() if k not in _NOT_IDENTITY})


_NOT_IDENTITY = frozenset({"action", "line", "log"})


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


def carry(old_rules: dict[str, Any], old_totals: dict[str, Counts], new_rules: dict[str, Any],
          matches: dict[str, list[tuple[int, int]]] | None = None) -> dict[str, Any]:
    """What the new generation starts from: {direction: {slot: [packets, bytes]}} (non-zero only).

    old_rules and new_rules are rule sets as Ruleset.to_json() gives them (the state keeps them so).
    matches: same_rules(old_rules, new_rules), when the caller carries several blocks.
    """
    matches = matches if matches is not None else same_rules(old_rules, new_rules)
    out: dict[str, Any] = {}
    for direction in DIRECTIONS:
        totals = old_totals[direction]
        slots: dict[str, list[int]] = {str(i): list(totals[j]) for i, j in matches[direction]
                                       if totals[j] != (0, 0)}
        kept = list(REASON_SLOTS)
        if old_rules["policy"][direction] == new_rules["policy"][direction]:
            kept.append(POLICY_SLOTS[direction])
        for slot in kept:
            if totals[slot] != (0, 0):
                slots[str(slot)] = list(totals[slot])
        if slots:
            out[direction] = slots
    return out


def same_rules(old_rules: dict[str, Any], new_rules: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Per direction, (new index, old index) of every rule whose counters carry over.

    Rules pair by name (a file's rule names are unique), then compare; a rule set of
    10,000 costs one dict comparison a rule, not a canonical text of each."""
    out = {}
    for direction in DIRECTIONS:
        old = _in(old_rules, direction)
        by_name: dict[str, list[int]] = {}
        for j, rule in enumerate(old):
            by_name.setdefault(rule["name"], []).append(j)
        pairs = []
        for i, rule in enumerate(_in(new_rules, direction)):
            for j in reversed(by_name.get(rule["name"], ())):
                if same_match(rule, old[j]):
                    pairs.append((i, j))
                    break
        out[direction] = pairs
    return out


# Per interface: counters come in blocks, one per protected interface and one ("other")
# for packets of any other interface; what carries is kept per block name.
OTHER = "(other)"
Blocks = dict[str, dict[str, Counts]]  # block name -> direction -> counts


def blocks_with_carried(live: Blocks, carried: dict[str, Any]) -> Blocks:
    if any(d in carried for d in DIRECTIONS):  # a state from before per-interface counters
        carried = {OTHER: carried}
    return {name: with_carried(live.get(name, {}), carried.get(name, {})) for name in {*live, *carried}}


def carry_blocks(old_rules: dict[str, Any], old: Blocks, new_rules: dict[str, Any]) -> dict[str, Any]:
    matches = same_rules(old_rules, new_rules)
    out = {name: carry(old_rules, counts, new_rules, matches) for name, counts in old.items()}
    return {name: c for name, c in out.items() if c}


def total(blocks: Blocks) -> dict[str, Counts]:
    """The blocks summed: counts over every interface."""
    out = {}
    for direction in DIRECTIONS:
        sums = [[0, 0] for _ in range(shared.N_COUNTERS)]
        for counts in blocks.values():
            for i, (p, b) in enumerate(counts.get(direction) or ()):
                if p or b:
                    sums[i][0] += p
                    sums[i][1] += b
        out[direction] = [(p, b) for p, b in sums]
    return out


def _in(ruleset: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    return [r for r in ruleset["rules"] if r["direction"] == direction]
