"""`bpfwall explain`: one packet judged by the loaded program and by the reference model.

The kernel's answer comes from BPF_PROG_TEST_RUN through the running generation (nothing is
sent on the wire); the reference model judges the same frame with the rules, sets, connection
table and bans in force, so a disagreement is a bug in one of them.
"""

from __future__ import annotations

from typing import Any

from . import conntrack as conntrack_mod
from . import names, netns, packets, reference, shared
from .errors import InputError, RuntimeFailure
from .setmaps import SetTables


def frame(proto: str, src: str, dst: str, sport: int, dport: int, flags: str,
          icmp_type: int | None, icmp_code: int) -> bytes:
    """The frame to explain, from the command line's words: a protocol name or number,
    TCP flags as 'syn,ack'; an InputError names the option that is wrong."""
    proto_num = names.protocol_number(proto) if not proto.isdigit() else int(proto)
    if proto_num is None or not 0 <= proto_num <= 255:
        raise InputError(f"--proto: unknown protocol '{proto}'")
    flag_bits = 0
    for f in filter(None, (x.strip().lower() for x in flags.split(","))):
        if f not in names.TCP_FLAGS:
            raise InputError(f"--flags: unknown TCP flag '{f}'")
        flag_bits |= names.TCP_FLAGS[f]
    try:
        return packets.build(proto_num, src, dst, sport, dport, flag_bits, icmp_type, icmp_code)
    except ValueError as exc:
        raise InputError(f"--src/--dst: {exc}") from None


class _BansInForce(reference.Guard):
    """The reference model's view of the guard for one explained packet: the source is banned
    if the live ban table says so; limits are taken as passed, as explain always has."""

    def __init__(self, banned: bool) -> None:
        super().__init__()
        self._banned = banned

    def banned(self, pkt: reference.Packet, now: int) -> bool:
        return self._banned

    def passes(self, rule, index: int, pkt: reference.Packet, now: int, learn: bool) -> bool:
        return True


def by_file(ruleset, frame: bytes, iface: str | None, path: str) -> dict[str, Any]:
    """The reference model alone, judging by a rule file: no kernel, no root."""
    ct = reference.Conntrack(ruleset.conntrack.get("timeouts", {})) if ruleset.uses_ct() else None
    ref = reference.decide(ruleset, frame, iface, ct=ct, now=1, learn=False)
    rule = ruleset.ingress()[ref.rule] if ref.rule is not None else None
    return {"verdict": shared.XDP_VERDICTS[ref.verdict], "rule": rule.name if rule else None,
            "line": rule.line if rule else None, "decided_by": ref.kind, "action": ref.action,
            "file": path, "ct_state": None if ct is None else shared.CT_STATE_NAMES[ref.ct_state]}


def live(scope, frame: bytes, iface: str, src: str) -> dict[str, Any]:
    """The running program's answer, with the reference model's beside it."""
    from . import bans

    state = scope.require_state()
    if iface not in state.interfaces:
        raise RuntimeFailure(f"{iface} is not protected by bpfwall")
    ruleset = state.rules()
    with netns.enter(scope.ns):
        ifindex = netns.ifindex(iface, scope.ns)
        with scope.open_generation(state) as gen:
            verdict, why, _ = gen.judge(frame, ifindex)
    rules = ruleset.ingress()
    ct = None
    if ruleset.uses_ct():
        ct = conntrack_mod.reference_table(scope, ruleset.conntrack.get("timeouts", {}))
    scans = "port_scan" in ruleset.conntrack
    guard = _BansInForce(bans.is_banned(scope, src, scans)) if ruleset.bans_enabled() else None
    with SetTables(scope.gen_dir(state.generation)) as tables:
        ruleset.cidr_sets = {name: tables.view(slot) for name, slot in ruleset.set_slots().items()}
        ref = reference.decide(ruleset, frame, iface, ct=ct, now=conntrack_mod.now_ns(), learn=False,
                               guard=guard)
    kernel_rule = rules[why.rule] if why.rule < len(rules) else None
    ref_rule = rules[ref.rule].name if ref.rule is not None else None
    kernel = {
        "verdict": shared.XDP_VERDICTS.get(verdict, str(verdict)),
        "rule": kernel_rule.name if kernel_rule else None,
        "line": kernel_rule.line if kernel_rule else None,
        "decided_by": shared.DECISIONS.get(why.decision, str(why.decision)),
        "action": shared.ACTION_NAMES.get(why.action),
    }
    return {
        **kernel,
        "ct_state": None if ref.ct_state is None or ct is None else shared.CT_STATE_NAMES[ref.ct_state],
        "file": ruleset.source,
        "reference": {"verdict": shared.XDP_VERDICTS[ref.verdict], "rule": ref_rule, "decided_by": ref.kind},
        "agree": (kernel["verdict"], kernel["rule"]) == (shared.XDP_VERDICTS[ref.verdict], ref_rule),
    }
