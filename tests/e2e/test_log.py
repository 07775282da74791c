"""`bpfwall log`: records of real packets, read back through the CLI, and followed into a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bpfwall.lab import CLIENT_V4, SERVER_V4
from tests.e2e.conftest import apply, bpfwall, stats, write

RULES = """\
version: 1
policy: {ingress: accept}
rules:
  - {name: dns, proto: udp, dport: 53, action: accept, log: true}
  - {name: syslog, proto: udp, dport: 514, action: drop, log: 2/second}
"""


def test_log_prints_records_of_real_packets(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    for _ in range(3):
        assert lab.udp_query(53) == "answered"
    res = bpfwall("log", "--netns", lab.server_ns, "--json")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 3
    r = records[0]
    assert (r["interface"], r["direction"], r["rule"], r["action"], r["proto"]) == (
        lab.server_if, "ingress", "dns", "accept", "udp")
    assert (r["src"], r["dst"], r["dport"], r["length"]) == (CLIENT_V4, SERVER_V4, 53, 14 + 20 + 8 + 4)
    # reading consumed them
    assert bpfwall("log", "--netns", lab.server_ns).stdout == ""
    # a flood at a limited rule: a burst of two records, the rest counted as held back
    for _ in range(20):
        lab.udp_query(514, timeout=0.01)
    res = bpfwall("log", "--netns", lab.server_ns)
    lines = res.stdout.splitlines()
    assert 2 <= len(lines) <= 3 and all("DROP rule syslog" in line for line in lines)
    held = stats(lab)["log"]
    assert held["suppressed"]["syslog"] + len(lines) == 20 and held["lost"] == 0


def test_log_follow_writes_json_lines(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    out = tmp_path / "bpfwall.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "log", "-f", "--netns", lab.server_ns,
                             "--output", str(out)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        time.sleep(1.5)  # the reader is up
        for _ in range(4):
            assert lab.udp_query(53) == "answered"
        deadline = time.monotonic() + 10
        while (not out.exists() or len(out.read_text().splitlines()) < 4) and time.monotonic() < deadline:
            time.sleep(0.1)
        # an apply in between: the follower keeps reading the scope's ring
        apply(lab, write(tmp_path, RULES.replace("log: true", "log: 5/second"), "b.yaml"))
        assert lab.udp_query(53) == "answered"
        while len(out.read_text().splitlines()) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(r["rule"] == "dns" for r in records)


def test_log_to_the_journal_protocol(lab, tmp_path):
    """--output journal speaks journald's native protocol; a socket of the test's stands in for it."""
    import socket

    path = str(tmp_path / "journal.sock")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(path)
    journal.settimeout(10)
    try:
        apply(lab, write(tmp_path, RULES))
        assert lab.udp_query(53) == "answered"
        res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "log", "--netns", lab.server_ns, "--output",
                              "journal"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "BPFWALL_JOURNAL_SOCKET": path})
        assert res.returncode == 0, res.stderr
        fields = dict(line.split("=", 1) for line in journal.recv(65536).decode().splitlines())
        assert fields["SYSLOG_IDENTIFIER"] == "bpfwall" and fields["BPFWALL_RULE"] == "dns"
        assert fields["BPFWALL_SRC"] == CLIENT_V4 and "ACCEPT rule dns" in fields["MESSAGE"]
    finally:
        journal.close()
    res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "log", "--netns", lab.server_ns, "--output",
                          "journal"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "BPFWALL_JOURNAL_SOCKET": str(tmp_path / "none.sock")})
    assert res.returncode == 1 and "no journal at" in res.stderr
