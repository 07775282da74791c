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
from tests.strategies import frames, rulesets

KINDS = ["rule", "policy", "malformed", "not_ip"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(rulesets(max_rules=10), st.lists(frames(), min_size=8, max_size=16))
def test_data_plane_agrees_with_reference(ruleset: Ruleset, batch: list[bytes]):
    with loaded(ruleset, {"lo": 1}) as gen:
        for frame in batch:
            if len(frame) < 14:
                continue  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
            verdict, why, _ = gen.judge(frame, 0)
            want = reference.decide(ruleset, frame, "lo")
            got_rule = why.rule if why.rule != shared.NO_RULE else None
            got = (KINDS[why.decision], got_rule, verdict)
            assert got == (want.kind, want.rule, want.verdict), (frame.hex(), want.reason)
