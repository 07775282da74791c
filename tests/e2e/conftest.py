"""A fresh lab (two namespaces, veth, servers) per test, always removed; the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bpfwall import scope as scope_mod
from bpfwall.lab import Lab

TCP_PORTS = (22, 25, 143, 8080)
UDP_PORTS = (53, 123, 514, 9999)


@pytest.fixture
def lab():
    scope_mod.ensure_bpffs()
    with Lab("e2e") as lab:
        for port in TCP_PORTS:
            lab.tcp_server(port)
            lab.tcp_server(port, v6=True)
        for port in UDP_PORTS:
            lab.udp_server(port)
            lab.udp_server(port, v6=True)
        yield lab


def bpfwall(*args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the CLI as a separate process, as an operator would."""
    return subprocess.run([sys.executable, "-m", "bpfwall.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def apply(lab: Lab, path: str, *extra: str) -> subprocess.CompletedProcess:
    res = bpfwall("apply", "-f", path, "-i", lab.server_if, "--netns", lab.server_ns, *extra)
    assert res.returncode == 0, res.stderr
    return res


def stats(lab: Lab) -> dict:
    res = bpfwall("stats", "--netns", lab.server_ns, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def write(tmp_path, text: str, name: str = "rules.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)
