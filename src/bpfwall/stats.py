"""Counters of the running firewall (with what earlier generations carried), in DESIGN.md's JSON shape."""

from __future__ import annotations

from typing import Any

from . import counters, ifinfo, shared
from .errors import RuntimeFailure
from .scope import Scope, State


def collect(scope: Scope, iface: str | None = None) -> dict[str, Any]:
    """Every counter, over all interfaces or (iface) of one protected interface."""
    state = scope.require_state()
    blocks = scope.counter_blocks(state)
    if iface is None:
        counts = counters.total(blocks)
    elif iface in state.interfaces:
        counts = {d: (blocks.get(iface) or {}).get(d) or counters.zero() for d in counters.DIRECTIONS}
    else:
        raise RuntimeFailure(f"{iface} is not protected by bpfwall")
    out = summarize(scope, state, counts)
    out["interface"] = iface
    out["answers_undelivered"] = undelivered(scope, state, [iface] if iface else list(state.interfaces))
    if any(r.get("log") for r in (state.ruleset or {}).get("rules", [])):
        from .logs import held_back

        out["log"] = held_back(scope, state)
    return out


def per_interface(scope: Scope) -> dict[str, dict[str, Any]]:
    """summarize() of each protected interface (and of other interfaces' packets), one map read."""
    state = scope.require_state()
    blocks = scope.counter_blocks(state)
    out = {name: summarize(scope, state, {d: counts.get(d) or counters.zero() for d in counters.DIRECTIONS})
           for name, counts in blocks.items()}
    for name, data in out.items():
        data["answers_undelivered"] = undelivered(scope, state, [name]) if name in state.interfaces else None
    return out


def undelivered(scope: Scope, state: State, names: list[str]) -> int | None:
    """Frames that the interfaces were handed after XDP (rejects' and SYN cookies' answers)
    and failed to deliver since bpfwall attached, as the kernel counts them; None where no
    interface's driver counts them (only a veth's does, of the kinds bpfwall knows)."""
    total, seen = 0, False
    for name in names:
        info = state.interfaces.get(name) or {}
        if info.get("kind") != "veth":
            continue
        now = ifinfo.undelivered(name, scope.ns)
        if now is None:
            continue
        base = info.get("undelivered_base") or 0
        total += now - base if now >= base else now  # a lower count: the interface was made anew
        seen = True
    return total if seen else None


def summarize(scope: Scope, state: State, counts: dict[str, counters.Counts]) -> dict[str, Any]:
    # The rule set as the state keeps it (JSON): names and actions are all this needs,
    # and parsing 10,000 rules back into Rule objects would double a scrape's time.
    ruleset = state.ruleset or {"rules": [], "policy": {"ingress": "accept", "egress": "accept"}}
    rules = []
    rule_drops = 0
    for direction in ("ingress", "egress"):
        for i, rule in enumerate(r for r in ruleset["rules"] if r["direction"] == direction):
            packets, nbytes = counts[direction][i]
            rules.append({"name": rule["name"], "direction": direction, "action": rule["action"],
                          "packets": packets, "bytes": nbytes})
            if rule["action"] != "accept":
                rule_drops += packets
    policy = {}
    policy_drops = 0
    for direction, slot in (("ingress", shared.CNT_POLICY_INGRESS), ("egress", shared.CNT_POLICY_EGRESS)):
        packets, nbytes = counts[direction][slot]
        policy[direction] = {"action": ruleset["policy"][direction], "packets": packets, "bytes": nbytes}
        if ruleset["policy"][direction] == "drop":
            policy_drops += packets

    def both(slot: int) -> int:
        return counts["ingress"][slot][0] + counts["egress"][slot][0]

    out = {
        "rules": rules,
        "policy": policy,
        "drops": dict(zip(shared.DROP_REASONS, (rule_drops, policy_drops, both(shared.CNT_MALFORMED),
                                                 both(shared.CNT_BANNED)), strict=True)),
        "passed_not_ip": both(shared.CNT_NOT_IP),
        "rejects_sent": both(shared.CNT_REJECT_SENT),
        "rejects_suppressed": counts["ingress"][shared.CNT_REJECT_SUPPRESSED][0],
        "guard": {
            "bans_added": counts["ingress"][shared.CNT_BANS_ADDED][0],
            "scan_bans": counts["ingress"][shared.CNT_SCAN_BANS][0],
            "syncookies_sent": counts["ingress"][shared.CNT_SYNCOOKIE_SENT][0],
            "syncookies_failed": counts["ingress"][shared.CNT_SYNCOOKIE_FAILED][0],
        },
        "generation": state.generation,
        "interfaces": sorted(state.interfaces),
    }
    return out
