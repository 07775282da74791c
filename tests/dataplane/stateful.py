"""Both programs of one rule set loaded side by side, sharing one connection table,
driven packet by packet beside the reference model."""

from __future__ import annotations

import os

from bpfwall import owners, reference, setmaps, shared
from bpfwall.compiler import compile_ruleset
from bpfwall.conntrack import now_ns
from bpfwall.maps import CT_MAPS
from bpfwall.ruleset import Ruleset
from tests.dataplane.conftest import load_or_reject

# Pair.send's owner when the test names none: the test run's own socket.
THIS_PROCESS = object()


class Pair:
    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.gens = {"ingress": load_or_reject(compile_ruleset(ruleset, "ingress"), {"lo": 1})}
        ct = {n: self.gens["ingress"].map_fds[n] for n in CT_MAPS}
        sets = self.gens["ingress"].set_fds()
        try:
            self.gens["egress"] = load_or_reject(compile_ruleset(ruleset, "egress"), {"lo": 1}, ct, sets)
        except BaseException:
            self.gens["ingress"].close()
            raise
        setmaps.fill(sets, ruleset.cidr_sets, ruleset.set_slots())
        self.ref = reference.Conntrack(ruleset.conntrack.get("timeouts"))
        # The kernel always keeps the reject answers' budget (and any limit): so does the model.
        self.guard = reference.Guard()

    def close(self) -> None:
        for g in self.gens.values():
            g.close()

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, direction: str, frame: bytes, owner: owners.Owner | None | object = THIS_PROCESS
             ) -> tuple[tuple, tuple]:
        """Runs frame as traffic through one program; returns (kernel, reference), each as
        (verdict, deciding rule index or None). owner (egress): the sending socket's; by
        default the test run's own (this process's cgroup, uid 0); an Owner's cgroup must be
        this process's; None: a packet without a socket."""
        skb_ctx = b""
        if owner is THIS_PROCESS:
            owner = owners.Owner(owners.cgroup_of_pid(os.getpid()) or "", 0)
        elif direction == "egress":
            skb_ctx = shared.skb_run_ctx(None if owner is None else owner.uid)
        gen = self.gens[direction]
        # Limits and the reject budget read one time in both: the clock read once here,
        # given to the reference and set as the kernel's test clock. Each reading the
        # clock itself, a moment apart, a token that came due between the two readings
        # had one answer a reject and the other drop it over budget.
        now = now_ns()
        gen.set_clock(now)
        before = gen.counters(blocks=1)
        verdict, _, _ = gen.test_run(frame, skb_ctx=skb_ctx)
        after = gen.counters(blocks=1)
        n = len(self.ruleset.direction(direction))
        hit = [i for i in range(n) if after[i][0] != before[i][0]]
        want = reference.decide(self.ruleset, frame, "lo", direction, self.ref, now, guard=self.guard,
                                owner=owner if direction == "egress" else None)
        return (verdict, hit[0] if hit else None), (want.verdict, want.rule)


PASS = {"ingress": shared.XDP_PASS, "egress": reference.TCX_NEXT}
DROP = {"ingress": shared.XDP_DROP, "egress": reference.TCX_DROP}
