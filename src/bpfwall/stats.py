"""Counters of the running firewall (with what earlier generations carried), in DESIGN.md's JSON shape."""

from __future__ import annotations

from typing import Any

from . import shared
from .dataplane import Scope


def collect(scope: Scope) -> dict[str, Any]:
    state = scope.require_state()
    # The rule set as the state keeps it (JSON): names and actions are all this needs,
    # and parsing 10,000 rules back into Rule objects would double a scrape's time.
    ruleset = state.ruleset or {"rules": [], "policy": {"ingress": "accept", "egress": "accept"}}
    counts = scope.counter_totals(state)
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
        "drops": {"malformed": both(shared.CNT_MALFORMED), "policy": policy_drops, "rule": rule_drops},
        "passed_not_ip": both(shared.CNT_NOT_IP),
        "rejects_sent": counts["ingress"][shared.CNT_REJECT_SENT][0],
        "generation": state.generation,
        "interfaces": sorted(state.interfaces),
    }
    if any(r.get("log") for r in ruleset["rules"]):
        from .logs import held_back

        out["log"] = held_back(scope)
    return out
