"""The main guard: random rule sets x random frames, kernel and reference model agree.

Each example loads a freshly compiled generation and runs a batch of frames
(valid, damaged, VLAN-tagged, fragmented, with extension header chains)
through it with BPF_PROG_TEST_RUN; the deciding rule, the kind of decision
and the XDP verdict must equal reference.decide() for every frame.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfwall import reference, shared
from bpfwall.ruleset import Ruleset
from tests.dataplane.conftest import loaded
from tests.dataplane.stateful import Pair
from tests.profile import examples
from tests.strategies import flow_steps, frames, rulesets

KINDS = shared.DECISIONS


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(rulesets(max_rules=10), st.lists(frames(), min_size=8, max_size=16))
def test_data_plane_agrees_with_reference(ruleset: Ruleset, batch: list[bytes]):
    with loaded(ruleset, {"lo": 1}) as gen:
        for frame in batch:
            if len(frame) < 14:
                continue  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
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
