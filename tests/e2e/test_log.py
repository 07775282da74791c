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


def test_log_to_the_journal_survives_a_journald_restart(lab, tmp_path):
    """journald goes away and comes back (a new socket at the same path): the follower
    reconnects, delivers what comes after, and tells the journal how many it could not."""
    import socket

    path = str(tmp_path / "journal.sock")

    def journald() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(10)
        return s

    def messages(s: socket.socket, n: int) -> list[dict[str, str]]:
        got = []
        for _ in range(n):
            got.append(dict(line.split("=", 1) for line in s.recv(65536).decode().splitlines()))
        return got

    apply(lab, write(tmp_path, RULES))
    journal = journald()
    proc = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "log", "-f", "--netns", lab.server_ns,
                             "--output", "journal"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BPFWALL_JOURNAL_SOCKET": path})
    try:
        time.sleep(1.5)
        assert lab.udp_query(53) == "answered"
        assert messages(journal, 1)[0]["BPFWALL_RULE"] == "dns"
        journal.close()
        os.unlink(path)  # journald stops
        for _ in range(3):
            assert lab.udp_query(53) == "answered"
        time.sleep(1.0)
        journal = journald()  # and starts again
        time.sleep(1.2)  # past the retry interval
        assert lab.udp_query(53) == "answered"
        notice, record = messages(journal, 2)
        assert notice["BPFWALL_UNDELIVERED"] == "3" and "could not be delivered" in notice["MESSAGE"]
        assert record["BPFWALL_RULE"] == "dns"
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        journal.close()
    assert "Traceback" not in proc.stderr.read()


def test_log_files_are_private_and_bad_paths_are_one_line(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    assert lab.udp_query(53) == "answered"
    out = tmp_path / "records.jsonl"
    res = bpfwall("log", "--netns", lab.server_ns, "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert oct(out.stat().st_mode & 0o777) == oct(0o600) and len(out.read_text().splitlines()) == 1
    # with the rule file's group: readable by it
    import grp

    group = grp.getgrgid(os.getgid() if os.getgid() != 0 else 100).gr_name
    apply(lab, write(tmp_path, RULES + f"group: {group}\n", "g.yaml"))
    shared_out = tmp_path / "shared.jsonl"
    res = bpfwall("log", "--netns", lab.server_ns, "--output", str(shared_out))
    assert res.returncode == 0, res.stderr
    st = shared_out.stat()
    assert oct(st.st_mode & 0o777) == oct(0o640) and grp.getgrgid(st.st_gid).gr_name == group
    res = bpfwall("log", "--netns", lab.server_ns, "--output", "/nonexistent/dir/x.jsonl")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == "--output /nonexistent/dir/x.jsonl: cannot create: No such file or directory"
