"""Loads compiled rule sets into the kernel (not attached anywhere) for BPF_PROG_TEST_RUN."""

from __future__ import annotations

import contextlib

import pytest

from bpfwall import config, setmaps
from bpfwall import scope as scope_mod
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation
from bpfwall.ruleset import Ruleset


@pytest.fixture(scope="session", autouse=True)
def _bpffs():
    scope_mod.ensure_bpffs()


@contextlib.contextmanager
def loaded(ruleset: Ruleset, ifindexes: dict[str, int] | None = None):
    gen = Generation.load(compile_ruleset(ruleset), ifindexes or {"lo": 1})
    try:
        setmaps.fill(gen.set_fds(), ruleset.cidr_sets, ruleset.set_slots())
        yield gen
    finally:
        gen.close()


def from_yaml(text: str) -> Ruleset:
    return config.loads(text, "test.yaml")
