"""What a re-apply carries over: unchanged rules, an unchanged policy, drops by reason."""

from __future__ import annotations

from bpfwall import counters, shared
from bpfwall.config import loads

A = """\
version: 1
policy: {ingress: drop}
rules:
  - {name: web, proto: tcp, dport: 80, action: accept}
  - {name: dns, proto: udp, dport: 53, action: accept}
"""


def totals(web: int, dns: int, policy: int, malformed: int) -> dict:
    ingress = counters.zero()
    ingress[0], ingress[1] = (web, web * 100), (dns, dns * 60)
    ingress[shared.CNT_POLICY_INGRESS] = (policy, policy * 50)
    ingress[shared.CNT_MALFORMED] = (malformed, malformed * 20)
    return {"ingress": ingress, "egress": counters.zero()}


def test_unchanged_rules_policy_and_reasons_carry():
    old = loads(A, "a.yaml").to_json()
    new = loads(A.replace("dport: 53, action: accept", "dport: 53, action: drop"), "b.yaml").to_json()
    carried = counters.carry(old, totals(5, 3, 7, 2), new)
    live = counters.with_carried({}, carried)["ingress"]
    assert live[0] == (5, 500) and live[1] == (3, 180)  # dns changed only its action
    assert live[shared.CNT_POLICY_INGRESS] == (7, 350) and live[shared.CNT_MALFORMED] == (2, 40)


def test_changed_match_policy_or_position():
    old = loads(A, "a.yaml").to_json()
    # dns moves first and web changes its port; the policy changes too
    new = loads("""\
version: 1
policy: {ingress: accept}
rules:
  - {name: dns, proto: udp, dport: 53, action: accept}
  - {name: web, proto: tcp, dport: 8080, action: accept}
""", "b.yaml").to_json()
    live = counters.with_carried({}, counters.carry(old, totals(5, 3, 7, 2), new))["ingress"]
    assert live[0] == (3, 180)  # dns, followed to its new place
    assert live[1] == (0, 0)  # web matches something else now
    assert live[shared.CNT_POLICY_INGRESS] == (0, 0)
    assert live[shared.CNT_MALFORMED] == (2, 40)


def test_a_rule_inserted_above_shifts_lines_but_not_counters():
    old = loads(A, "a.yaml").to_json()
    new = loads(A.replace("rules:\n", "rules:\n  - {name: ssh, proto: tcp, dport: 22, action: accept}\n"),
                "b.yaml").to_json()
    live = counters.with_carried({}, counters.carry(old, totals(5, 3, 7, 2), new))["ingress"]
    assert live[0] == (0, 0)  # ssh is new
    assert live[1] == (5, 500) and live[2] == (3, 180)  # web and dns, a line lower each
