"""`bpfwall explain`: one packet judged by the loaded program and by the reference model.

The kernel's answer comes from BPF_PROG_TEST_RUN through the running generation (nothing is
sent on the wire); the reference model judges the same frame with the rules, sets, connection
table and bans in force, so a disagreement is a bug in one of them.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from . import conntrack as conntrack_mod
from . import names, netns, owners, packets, reference, shared
from .errors import InputError, RuntimeFailure
from .setmaps import SetTables


def _icmp_word(text: str | int | None, table: dict[str, int], option: str) -> int | None:
    """An ICMP type or code as a rule file takes it: a number 0-255 or a name of the
    protocol's table (echo-request is 8 for ICMP, 128 for ICMPv6)."""
    if text is None or isinstance(text, int):
        return text
    word = text.strip().lower()
    if word.isdigit() and int(word) <= 255:
        return int(word)
    if word in table:
        return table[word]
    raise InputError(f"{option}: '{text}' is neither a number 0-255 nor one of {', '.join(table)}")


def frame(proto: str, src: str, dst: str, sport: int, dport: int, flags: str,
          icmp_type: str | int | None, icmp_code: str | int) -> bytes:
    """The frame to explain, from the command line's words: a protocol name or number,
    TCP flags as 'syn,ack', ICMP types and codes by name or number; an InputError names
    the option that is wrong."""
    proto_num = names.protocol_number(proto) if not proto.isdigit() else int(proto)
    if proto_num is None or not 0 <= proto_num <= 255:
        raise InputError(f"--proto: unknown protocol '{proto}'")
    v6 = proto_num == names.ICMPV6
    icmp_type = _icmp_word(icmp_type, names.ICMPV6_TYPES if v6 else names.ICMP_TYPES, "--icmp-type")
    icmp_code = _icmp_word(icmp_code, names.ICMPV6_CODES if v6 else names.ICMP_CODES, "--icmp-code") or 0
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


# What an egress packet comes to, by its action: the tcx verdict, and a refusal answered.
EGRESS_VERDICTS = {"accept": "pass", "reject": "reject"}


def egress_verdict(action: str) -> str:
    return EGRESS_VERDICTS.get(action, "drop")


def owner_of(direction: str, cgroup: str | None, uid: int | None) -> owners.Owner | None:
    """The socket an explained packet comes from: on egress, the cgroup and uid given (the
    root cgroup, uid 0, where only one is); None (no socket: a forwarded packet or the kernel's
    own) where neither is, and always on ingress."""
    if direction != "egress" or (cgroup is None and uid is None):
        return None
    return owners.Owner(cgroup or "", uid or 0)


def at_connect(ruleset, frame: bytes, owner: owners.Owner | None, judged: str) -> dict[str, Any] | None:
    """What the cgroup hooks do with the connect() or sendmsg() that would send this packet, by
    the reference model (the hooks cannot be test-run), or None where they have no say: no
    owner, not TCP or UDP, or a rule set without owner keys. judged: state.at_connect ("yes",
    or why connections are not judged there)."""
    if owner is None or not (ruleset.cgroups() or ruleset.users()):
        return None
    try:
        pkt = reference.parse(frame)
    except (reference.Malformed, reference.NotIp):
        return None
    if pkt.proto not in (names.TCP, reference.UDP):
        return None
    if judged != "yes":
        return {"judged": False, "why": judged}
    outcome, rule = reference.decide_connect(ruleset, pkt.proto, pkt.daddr, pkt.dport, owner)
    return {"judged": True, "outcome": outcome,
            "rule": ruleset.direction("egress")[rule].name if rule is not None else None,
            "errno": {"drop": "EPERM", "reject": "ECONNREFUSED"}.get(outcome)}


def by_file(ruleset, frame: bytes, iface: str | None, path: str, direction: str = "ingress",
            owner: owners.Owner | None = None) -> dict[str, Any]:
    """The reference model alone, judging by a rule file: no kernel, no root."""
    ct = reference.Conntrack(ruleset.conntrack.get("timeouts", {})) if ruleset.uses_ct() else None
    ref = reference.decide(ruleset, frame, iface, direction, ct=ct, now=1, learn=False, owner=owner)
    rule = ruleset.direction(direction)[ref.rule] if ref.rule is not None else None
    verdict = egress_verdict(ref.action) if direction == "egress" else shared.XDP_VERDICTS[ref.verdict]
    out = {"direction": direction, "verdict": verdict, "rule": rule.name if rule else None,
           "line": rule.line if rule else None, "decided_by": ref.kind, "action": ref.action,
           "file": path, "ct_state": None if ct is None else shared.CT_STATE_NAMES[ref.ct_state]}
    call = at_connect(ruleset, frame, owner, "yes") if direction == "egress" else None
    if call is not None:
        out["at_connect"] = call
    return out


def _judge_egress(gen, frame: bytes, ifindex: int, owner: owners.Owner | None) -> tuple[int, shared.Explain]:
    """The egress program's answer for a packet from owner's socket. A test run's socket is in
    the cgroup of the process that runs it, so a child process runs it from a cgroup of its own
    just below the owner's (rules naming the owner's cgroup or one above match it alike, and a
    cgroup whose controllers are delegated may take no process itself)."""
    if owner is None:
        return gen.judge_egress(frame, ifindex, None)
    mount = owners.cgroup2_mount()
    if mount is None:
        raise RuntimeFailure("this host has no cgroup v2 mount: there is no cgroup to send from")
    if owner.cgroup and owners.cgroup_id(owner.cgroup, mount) is None:
        raise InputError(f"--cgroup: {owner.cgroup} does not exist now under {mount} (--file judges "
                         "by the reference model alone)")
    leaf = os.path.join(mount, owner.cgroup, f"bpfwall-explain-{os.getpid()}") if owner.cgroup else None
    if leaf:
        os.mkdir(leaf)
    try:
        return _in_child(os.path.join(leaf or mount, "cgroup.procs"),
                         lambda: gen.judge_egress(frame, ifindex, owner.uid))
    finally:
        if leaf:
            os.rmdir(leaf)


def _in_child(procs: str, run):
    """run() in a child process that first joins the cgroup of procs; its result, pickled back."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(rd)
            with open(procs, "w", encoding="ascii") as f:
                f.write(str(os.getpid()))
            payload = pickle.dumps(("ok", run()))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            payload, code = pickle.dumps(("error", f"{type(exc).__name__}: {exc}")), 1
        with os.fdopen(wr, "wb") as out:
            out.write(payload)
        os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status != "ok":
        raise RuntimeFailure(f"the test run from the cgroup failed: {value}")
    return value


def live(scope, frame: bytes, iface: str, src: str, direction: str = "ingress",
         owner: owners.Owner | None = None) -> dict[str, Any]:
    """The running program's answer, with the reference model's beside it."""
    from . import bans

    state = scope.require_state()
    if iface not in state.interfaces:
        raise RuntimeFailure(f"{iface} is not protected by bpfwall")
    ruleset = state.rules()
    egress = direction == "egress"
    if egress and not ruleset.direction("egress"):
        raise InputError("the rule set in force has no egress rules: every packet leaves")
    with netns.enter(scope.ns):
        ifindex = netns.ifindex(iface, scope.ns)
        with scope.open_generation(state, direction) as gen:
            if egress:
                verdict, why = _judge_egress(gen, frame, ifindex, owner)
            else:
                verdict, why, _ = gen.judge(frame, ifindex)
    rules = ruleset.direction(direction)
    ct = None
    if ruleset.uses_ct():
        ct = conntrack_mod.reference_table(scope, ruleset.conntrack.get("timeouts", {}))
    scans = "port_scan" in ruleset.conntrack
    guard = _BansInForce(bans.is_banned(scope, src, scans)) if ruleset.bans_enabled() else None
    with SetTables(scope.gen_dir(state.generation)) as tables:
        ruleset.cidr_sets = {name: tables.view(slot) for name, slot in ruleset.set_slots().items()}
        ref = reference.decide(ruleset, frame, iface, direction, ct=ct, now=conntrack_mod.now_ns(),
                               learn=False, guard=guard, owner=owner)
        call = at_connect(ruleset, frame, owner, state.at_connect) if egress else None
    kernel_rule = rules[why.rule] if why.rule < len(rules) else None
    ref_rule = rules[ref.rule].name if ref.rule is not None else None
    action = shared.ACTION_NAMES.get(why.action)
    if egress:
        kernel_verdict, ref_verdict = egress_verdict(action or "drop"), egress_verdict(ref.action)
    else:
        kernel_verdict = shared.XDP_VERDICTS.get(verdict, str(verdict))
        ref_verdict = shared.XDP_VERDICTS[ref.verdict]
    kernel = {
        "direction": direction,
        "verdict": kernel_verdict,
        "rule": kernel_rule.name if kernel_rule else None,
        "line": kernel_rule.line if kernel_rule else None,
        "decided_by": shared.DECISIONS.get(why.decision, str(why.decision)),
        "action": action,
    }
    return {
        **kernel,
        "ct_state": None if ref.ct_state is None or ct is None else shared.CT_STATE_NAMES[ref.ct_state],
        "file": ruleset.source,
        "reference": {"verdict": ref_verdict, "rule": ref_rule, "decided_by": ref.kind},
        "agree": (kernel["verdict"], kernel["rule"]) == (ref_verdict, ref_rule),
        **({"at_connect": call} if call is not None else {}),
    }
