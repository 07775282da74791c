"""Counters of the running generation, in the JSON shape of DESIGN.md."""

from __future__ import annotations

from typing import Any

from . import shared
from .dataplane import Scope


def collect(scope: Scope) -> dict[str, Any]:
    state = scope.require_state()
    ruleset = state.rules()
    with scope.open_generation(state) as gen:
        counts = gen.counters()
    rules = []
    rule_drops = 0
    for i, rule in enumerate(ruleset.ingress()):
        packets, nbytes = counts[i]
        rules.append({"name": rule.name, "direction": rule.direction, "action": rule.action,
                      "packets": packets, "bytes": nbytes})
        if rule.action != "accept":
            rule_drops += packets
    pin, bin_ = counts[shared.CNT_POLICY_INGRESS]
    pout, bout = counts[shared.CNT_POLICY_EGRESS]
    return {
        "rules": rules,
        "policy": {
            "ingress": {"action": ruleset.policy["ingress"], "packets": pin, "bytes": bin_},
            "egress": {"action": ruleset.policy["egress"], "packets": pout, "bytes": bout},
        },
        "drops": {
            "malformed": counts[shared.CNT_MALFORMED][0],
            "policy": pin if ruleset.policy["ingress"] == "drop" else 0,
            "rule": rule_drops,
        },
        "passed_not_ip": counts[shared.CNT_NOT_IP][0],
        "rejects_sent": counts[shared.CNT_REJECT_SENT][0],
        "generation": state.generation,
        "interfaces": sorted(state.interfaces),
    }
