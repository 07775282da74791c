"""A fresh lab (two namespaces, veth, servers) per test, always removed; the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bpfwall import scope as scope_mod
from bpfwall.lab import SERVER_V4, Lab

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


def fake_sshd(lab, activated: bool = False) -> subprocess.Popen:
    """A process named sshd listening on port 2222 in the server namespace. activated: as
    systemd's socket activation runs it, a process named systemd holds the listener and a
    child named sshd the accepted connection."""
    code = f"""
import ctypes, os, socket, sys
from bpfwall import netns
name = lambda n: ctypes.CDLL(None).prctl(15, n, 0, 0, 0)  # PR_SET_NAME: the comm /proc shows
name(b"systemd" if {activated!r} else b"sshd")
with netns.enter({lab.server_ns!r}):
    s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({SERVER_V4!r}, 2222))
s.listen()
print("ready", flush=True)
conn, _ = s.accept()
if {activated!r}:
    if os.fork() == 0:
        name(b"sshd")
        s.close()
        sys.stdin.read()
        os._exit(0)
    conn.close()
    print("handed over", flush=True)
    os.wait()
else:
    sys.stdin.read()
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc
