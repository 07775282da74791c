"""`bpfwall top` under a pseudo-terminal: refreshes, shows the dropped port and source, cleans up."""

from __future__ import annotations

import os
import pty
import sys
import time

from bpfwall import libbpf
from bpfwall.dataplane import Scope
from bpfwall.lab import CLIENT_V4
from tests.e2e.conftest import apply, write
from tests.e2e.test_cli import RULES


def test_top_shows_drops_and_clears_its_flag(lab, tmp_path):
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
    # top has exited: drop statistics are off again
    scope = Scope(lab.server_ns)
    with scope.open_generation() as gen:
        import ctypes

        flag = ctypes.c_uint32()
        libbpf.map_lookup(gen.map_fds["drop_stats_on"], ctypes.c_uint32(0), flag)
        assert flag.value == 0
