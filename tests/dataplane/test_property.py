"""The main guard: random rule sets x random frames, kernel and reference model agree.

Each example loads a freshly compiled generation and runs a batch of frames
(valid, damaged, VLAN-tagged, fragmented, with extension header chains)
through it with BPF_PROG_TEST_RUN; the deciding rule, the kind of decision
and the XDP verdict must equal reference.decide() for every frame.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfwall import reference, setmaps, shared
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation, fits, layout
from bpfwall.ruleset import Ruleset
from tests.dataplane.conftest import load_or_reject, loaded
from tests.dataplane.stateful import Pair
from tests.profile import examples
from tests.strategies import blocklist_rulesets, edits, flow_steps, frames, rulesets

KINDS = shared.DECISIONS


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.one_of(rulesets(max_rules=10), blocklist_rulesets(max_rules=8)),
       st.lists(frames(), min_size=8, max_size=16), st.sampled_from([0, 0, 4000, 9000]))
def test_data_plane_agrees_with_reference(ruleset: Ruleset, batch: list[bytes], jumbo: int):
    """jumbo: frames padded to that many bytes (trailing bytes the IP length leaves out), which
    the test run hands the program in fragments, as a jumbo-frame interface does."""
    with loaded(ruleset, {"lo": 1}) as gen:
        for frame in batch:
            if len(frame) < 14:
                continue  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
            frame = frame.ljust(jumbo, b"\0")
            verdict, why, _ = gen.judge(frame, 0)
            # judge() marks frames for explanation: they see the (empty) table but never change it
            want = reference.decide(ruleset, frame, "lo", ct=reference.Conntrack(), learn=False)
            got_rule = why.rule if why.rule != shared.NO_RULE else None
            got = (KINDS[why.decision], got_rule, verdict)
            assert got == (want.kind, want.rule, want.verdict), (frame.hex(), want.reason)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(rulesets(max_rules=8), st.lists(flow_steps(), min_size=10, max_size=30))
def test_stateful_sequences_agree_with_reference(ruleset: Ruleset, steps: list[tuple[str, bytes]]):
    """Both programs share one table; every verdict and deciding rule of a sequence of
    packets in both directions equals the stateful reference model's."""
    with Pair(ruleset) as pair:
        for i, (direction, frame) in enumerate(steps):
            kernel, ref = pair.send(direction, frame)
            assert kernel == ref, (i, direction, frame.hex())


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(blocklist_rulesets(max_rules=6), st.lists(flow_steps(), min_size=10, max_size=30))
def test_blocklist_rules_first_agree_with_reference(ruleset: Ruleset, steps: list[tuple[str, bytes]]):
    """Leading rules that drop by source set alone are judged before the connection
    table: every verdict of a stateful sequence is still the reference model's."""
    with Pair(ruleset) as pair:
        for i, (direction, frame) in enumerate(steps):
            kernel, ref = pair.send(direction, frame)
            assert kernel == ref, (i, direction, frame.hex())


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.data(), rulesets(max_rules=10), st.lists(frames(), min_size=8, max_size=16))
def test_one_rule_changes_refilled_in_place_agree_with_a_fresh_load(data, base: Ruleset, batch: list[bytes]):
    """The incremental path: a sequence of one-rule changes, each put into the loaded
    program's tables by refill() when it fits (as apply does with the idle generation),
    judges every frame as a fresh load of the last rule set does, and as the reference."""
    steps = data.draw(edits(base))
    gen = _load_or_reject(compile_ruleset(base))
    try:
        for ruleset in steps:
            compiled = compile_ruleset(ruleset)
            if fits(gen.shape, layout(compiled, {}, None), gen.shape["shared"]):
                gen.refill(compiled, {"lo": 1}, {}, 0, sets=True)
            else:
                old, gen = gen, None
                old.close()
                gen = _load_or_reject(compiled)
            setmaps.fill(gen.set_fds(), ruleset.cidr_sets, ruleset.set_slots())
        final = steps[-1] if steps else base
        if not steps:
            setmaps.fill(gen.set_fds(), final.cidr_sets, final.set_slots())
        with loaded(final, {"lo": 1}, fresh=True) as fresh:
            for frame in batch:
                if len(frame) < 14:
                    continue
                verdict, why, _ = gen.judge(frame, 0)
                again = fresh.judge(frame, 0)
                want = reference.decide(final, frame, "lo", ct=reference.Conntrack(), learn=False)
                got_rule = why.rule if why.rule != shared.NO_RULE else None
                assert (KINDS[why.decision], got_rule, verdict) == (want.kind, want.rule, want.verdict), frame.hex()
                assert (verdict, why.rule, why.decision) == (again[0], again[1].rule, again[1].decision)
    finally:
        if gen is not None:
            gen.close()


def _load_or_reject(compiled) -> Generation:
    return load_or_reject(compiled, {"lo": 1})
