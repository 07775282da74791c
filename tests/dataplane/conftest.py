"""Loads compiled rule sets into the kernel (not attached anywhere) for BPF_PROG_TEST_RUN."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import reject

from bpfwall import config, setmaps
from bpfwall import scope as scope_mod
from bpfwall.compiler import compile_ruleset
from bpfwall.errors import RuntimeFailure
from bpfwall.generation import Generation, empty, fits, layout
from bpfwall.maps import CT_MAPS, SCOPE_MAPS
from bpfwall.ruleset import Ruleset


@pytest.fixture(scope="session", autouse=True)
def _bpffs():
    scope_mod.ensure_bpffs()


@pytest.fixture(scope="module")
def tree():
    """tests.dataplane.cgroups.TREE made, and removed after the module's tests."""
    from tests.dataplane.cgroups import CgroupTree

    t = CgroupTree()
    try:
        yield t
    finally:
        t.close()


# Loaded programs by layout, refilled for the next rule set that fits: most examples of
# the property tests then cost table writes instead of a verifier load, and the refill
# path that apply uses for a shape-preserving change runs under the main guard.
_LOADED: dict[str, Generation] = {}
_KEEP = 8
REFILLS = {"loaded": 0, "refilled": 0}


def load_or_reject(compiled, ifindexes: dict[str, int], *shared_maps) -> Generation:
    """Generation.load, or hypothesis' reject() for a rule set the verifier refuses as too
    large (E2BIG): some rule sets with several sets in both address fields, interfaces and
    connection state take it past a million instructions. apply refuses those whole (a known
    limit, in docs/rule-language.md); these tests judge the rule sets that load."""
    try:
        return Generation.load(compiled, ifindexes, *shared_maps)
    except RuntimeFailure as exc:
        if "Argument list too long" in str(exc):
            reject()
        raise


@contextlib.contextmanager
def loaded(ruleset: Ruleset, ifindexes: dict[str, int] | None = None, fresh: bool = False):
    """A generation running ruleset: a cached one refilled when its layout fits (unless
    fresh), else a new load. Either way every table starts as a fresh load's would."""
    compiled = compile_ruleset(ruleset)
    ifindexes = ifindexes or {"lo": 1}
    want = layout(compiled, {}, None)
    key = json.dumps(want["fixed"], sort_keys=True)
    gen = None if fresh else _LOADED.pop(key, None)
    if gen is not None and fits(gen.shape, want, gen.shape["shared"]):
        gen.refill(compiled, ifindexes, {}, 0, sets=True)
        for name in (*CT_MAPS, *SCOPE_MAPS):  # its own here: no scope shares them in a test
            if name != "log_ring":
                empty(gen.map_fds[name])
        REFILLS["refilled"] += 1
    else:
        if gen is not None:
            gen.close()
        gen = load_or_reject(compiled, ifindexes)
        REFILLS["loaded"] += 1
    ok = False
    try:
        setmaps.fill(gen.set_fds(), ruleset.cidr_sets, ruleset.set_slots())
        yield gen
        ok = True
    finally:
        if ok and not fresh and not compiled.config.log_enabled:  # a ring keeps its records
            _LOADED[key] = gen
            while len(_LOADED) > _KEEP:
                _LOADED.pop(next(iter(_LOADED))).close()
        else:
            gen.close()


@pytest.fixture(scope="session", autouse=True)
def _loaded_cache():
    yield
    for gen in _LOADED.values():
        gen.close()
    _LOADED.clear()
    print(f"\ndata-plane generations: {REFILLS['loaded']} loaded, {REFILLS['refilled']} refilled (no verifier load)")


def from_yaml(text: str) -> Ruleset:
    return config.loads(text, "test.yaml")
