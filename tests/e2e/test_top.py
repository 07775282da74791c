"""`bpfwall top` under a pseudo-terminal: refreshes, shows the dropped port and source, and its
drop statistics lapse by themselves however it ends."""

from __future__ import annotations

import ctypes
import os
import pty
import signal
import sys
import time

from bpfwall import libbpf
from bpfwall.lab import CLIENT_V4
from bpfwall.scope import Scope
from tests.e2e.conftest import apply, write
from tests.e2e.test_cli import RULES


def _lease(scope: Scope) -> tuple[int, int]:
    """The drop-statistics lease, and packets counted for the dropped port 9999."""
    with scope.open_generation() as gen:
        until, port = ctypes.c_uint64(), ctypes.c_uint64()
        libbpf.map_lookup(gen.map_fds["drop_stats_until"], ctypes.c_uint32(0), until)
        libbpf.map_lookup(gen.map_fds["drop_ports"], ctypes.c_uint32(9999), port)
        return until.value, port.value


def test_top_shows_drops_and_its_lease_lapses(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "bpfwall.cli", "top", "--interval", "0.3",
                                  "--count", "8", "--netns", lab.server_ns])
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _ in range(40):  # dropped by rule count-me; one source, one port
            lab.udp_query(9999, timeout=0.001)
        try:
            out += os.read(fd, 65536)
        except OSError:
            break  # top exited after its refreshes
    status = os.waitpid(pid, 0)[1]
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out[-2000:]
    assert b"Traceback" not in out
    text = out.decode(errors="replace")
    assert "busiest rules" in text and "top dropped ports" in text and "9999" in text
    assert CLIENT_V4 in text, "the sampled sources name the client"
    _assert_lapses(lab, Scope(lab.server_ns))


def _assert_lapses(lab, scope: Scope) -> None:
    """top is gone: within its lease (2 s at short intervals) the data plane stops counting."""
    until, _ = _lease(scope)
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert 0 < until - now <= 2.5e9 or until == 0
    time.sleep(max(0, (until - now) / 1e9) + 0.2)
    _, before = _lease(scope)
    for _ in range(10):
        lab.udp_query(9999, timeout=0.001)
    until, after = _lease(scope)
    assert after == before, "drops are no longer counted by port"
    assert until == 0, "the first drop after the lease cleared it"


def test_top_killed_by_a_signal_stops_costing_the_data_plane(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    scope = Scope(lab.server_ns)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, "-m", "bpfwall.cli", "top", "--interval", "0.2",
                                      "--netns", lab.server_ns])
        deadline = time.monotonic() + 20
        while _lease(scope)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _lease(scope)[0] > 0, "top took the lease"
        os.kill(pid, sig)
        with_output = b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                with_output += chunk
        except OSError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
        _assert_lapses(lab, scope)


def test_one_top_exiting_leaves_another_running(lab, tmp_path):
    """Two tops: the short one's end does not stop the statistics the long one reads."""
    apply(lab, write(tmp_path, RULES))
    scope = Scope(lab.server_ns)
    from bpfwall import top

    with scope.open_generation() as gen:
        top.renew(gen, 30)  # the long-running top's lease
        top.renew(gen, 2)  # a short one's renewal never moves it back
    until, before = _lease(scope)
    assert until - time.clock_gettime_ns(time.CLOCK_MONOTONIC) > 25e9
    for _ in range(10):
        lab.udp_query(9999, timeout=0.001)
    assert _lease(scope)[1] == before + 10
