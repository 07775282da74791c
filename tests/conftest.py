"""Shared fixtures. Root-only suites skip themselves without root; CI runs as root."""

from __future__ import annotations

import os
import subprocess

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (BPF and network namespaces)")
    for item in items:
        if "tests/dataplane" in str(item.fspath) or "tests/e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind():
    """Whatever a test did, leave no namespace or pin of this run behind."""
    yield
    if not IS_ROOT:
        return
    pid = str(os.getpid())
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("bpfwall-") and f"-{pid}-" in name:
            from bpfwall import transaction
            from bpfwall.scope import Scope

            try:
                transaction.down(Scope(name))
            except Exception:
                pass
            subprocess.run(["ip", "netns", "del", name], check=False)
