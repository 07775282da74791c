"""How many examples the property tests draw: CI's counts, or a tenth of them for a quick
local run (BPFWALL_TEST_PROFILE=fast make test). Every @settings(max_examples=...) goes
through examples(), since an explicit count would override a Hypothesis profile."""

from __future__ import annotations

import os

FAST = os.environ.get("BPFWALL_TEST_PROFILE", "ci") == "fast"


def examples(ci_count: int) -> int:
    return max(3, ci_count // 10) if FAST else ci_count
