"""`bpfwall set`: CIDR sets changed on the running firewall, judged from the next packet on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from bpfwall.lab import CLIENT_V4, CLIENT_V6
from tests.e2e.conftest import apply, bpfwall, write

RULES = """\
version: 1
policy: {ingress: accept}
sets:
  blocked: {type: cidr, elements: [10.200.99.0/24, "fd42:200::99/128"]}
  web: {type: port, elements: [80]}
rules:
  - {name: drop-blocked, src: "@blocked", action: drop}
  - {name: dns, proto: udp, dport: 53, action: accept}
"""


def set_cmd(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if stdin is None:
        return bpfwall("set", *args, "--netns", lab.server_ns)
    return subprocess.run([sys.executable, "-m", "bpfwall.cli", "set", *args, "--netns", lab.server_ns],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_set_changes_verdicts_from_the_next_packet(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    for v6, me in ((False, CLIENT_V4), (True, CLIENT_V6)):
        for _ in range(5):
            assert lab.udp_query(53, v6) == "answered"
            res = set_cmd(lab, "add", "blocked", me)
            assert res.returncode == 0, res.stderr
            assert "added 1 element" in res.stdout
            assert lab.udp_query(53, v6, timeout=0.3) == "timeout"
            res = set_cmd(lab, "del", "blocked", me)
            assert res.returncode == 0, res.stderr
        assert lab.udp_query(53, v6) == "answered"


def test_set_changes_under_traffic(lab, tmp_path):
    """With a client hammering, each add and del takes effect, and once a command
    has returned every later packet sees its result."""
    apply(lab, write(tmp_path, RULES))
    stop = threading.Event()
    errors: list[str] = []

    def hammer():
        while not stop.is_set():
            lab.udp_query(53, timeout=0.05)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(10):
            assert set_cmd(lab, "add", "blocked", "10.200.0.0/24").returncode == 0
            if lab.udp_query(53, timeout=0.2) != "timeout":
                errors.append("answered after add")
            assert set_cmd(lab, "del", "blocked", "10.200.0.0/24").returncode == 0
            if lab.udp_query(53, timeout=1.0) != "answered":
                errors.append("no answer after del")
    finally:
        stop.set()
        t.join()
    assert not errors


def test_set_bulk_from_stdin_and_list(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    many = [f"10.{i // 256}.{i % 256}.0/24" for i in range(5000)] + [f"2001:db8:{i:x}::/48" for i in range(500)]
    res = set_cmd(lab, "add", "blocked", "-", stdin="# a netset\n" + "\n".join(many) + "\n")
    assert res.returncode == 0, res.stderr
    assert "added 5500 elements" in res.stdout
    res = set_cmd(lab, "list", "blocked")
    assert res.returncode == 0, res.stderr
    listed = res.stdout.split()
    assert len(listed) == 5502 and "10.200.99.0/24" in listed and "fd42:200::99" in listed
    assert listed[0] == "10.0.0.0/24"  # sorted, IPv4 first
    # add again: idempotent
    res = set_cmd(lab, "add", "blocked", "10.0.0.0/24")
    assert res.returncode == 0 and "already there" in res.stdout
    status = bpfwall("status", "--netns", lab.server_ns, "--json")
    assert '"blocked"' in status.stdout


def test_set_errors_change_nothing(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    res = set_cmd(lab, "del", "blocked", "10.200.99.0/24", "10.200.5.0/24")
    assert res.returncode == 2 and "not in set 'blocked': 10.200.5.0/24" in res.stderr
    res = set_cmd(lab, "add", "blocked", "10.200.0.2", "10.200.0.300")
    assert res.returncode == 2 and "10.200.0.300" in res.stderr
    res = set_cmd(lab, "add", "web", "443")
    assert res.returncode == 2 and "holds ports" in res.stderr
    res = set_cmd(lab, "add", "nosuch", "10.200.0.2")
    assert res.returncode == 2 and "no set named 'nosuch'" in res.stderr
    assert set_cmd(lab, "list", "blocked").stdout.split() == ["10.200.99.0/24", "fd42:200::99"]
    assert lab.udp_query(53) == "answered"


def test_explain_sees_the_sets_in_force(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    args = ("explain", "--netns", lab.server_ns, "-i", lab.server_if, "--proto", "udp", "--src", CLIENT_V4,
            "--dst", "10.200.0.1", "--dport", "53", "--json")
    assert '"rule": "dns"' in bpfwall(*args).stdout
    assert set_cmd(lab, "add", "blocked", CLIENT_V4).returncode == 0
    res = bpfwall(*args)
    assert res.returncode == 0, res.stdout  # kernel and reference model agree
    assert '"rule": "drop-blocked"' in res.stdout


def test_an_unchanged_file_applies_as_a_no_op(lab, tmp_path):
    """Applying the files in force again builds no generation; a change to the rule file,
    to a set file, or to a set by `set` since, makes it an apply again."""
    (tmp_path / "blocked.netset").write_text("10.200.98.0/24\n")
    rules = write(tmp_path, RULES.replace("web: {type: port", "listed: {type: cidr, files: [blocked.netset]}\n"
                                          "  web: {type: port"))

    def generation() -> int:
        import json

        return json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)["generation"]

    apply(lab, rules)
    res = apply(lab, rules)
    assert res.stdout.startswith("unchanged:") and generation() == 1
    (tmp_path / "blocked.netset").write_text("10.200.97.0/24\n")  # a set file changed
    assert apply(lab, rules).stdout.startswith("applied") and generation() == 2
    assert apply(lab, rules, "-i", lab.server_if).stdout.startswith("unchanged:")
    assert set_cmd(lab, "add", "blocked", CLIENT_V4).returncode == 0  # a live change since
    assert apply(lab, rules).stdout.startswith("applied") and generation() == 3
    assert lab.udp_query(53) == "answered"  # the apply put the file's elements back


ALLOWED = """\
version: 1
policy: {ingress: drop}
sets:
  admins: {type: cidr, elements: [10.200.0.2, 10.200.0.77]}
  blocked: {type: cidr, elements: [192.0.2.0/24]}
rules:
  - {name: drop-blocked, src: "@blocked", action: drop}
  - {name: ssh, proto: tcp, dport: 22, src: "@admins", action: accept}
"""


def test_a_set_change_that_would_cut_an_ssh_session_is_refused(lab, tmp_path):
    """The operator's SSH session comes from the client: blocking its network, or taking its
    address out of the allow list, is refused as an apply that cut it would be; --force
    goes ahead; changes that spare it pass."""
    apply(lab, write(tmp_path, ALLOWED))
    env = {**os.environ, "SSH_CONNECTION": f"{CLIENT_V4} 40022 10.200.0.1 22"}

    def as_operator(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bpfwall.cli", "set", *args, "--netns", lab.server_ns],
                              capture_output=True, text=True, timeout=120, env=env)

    res = as_operator("add", "blocked", "10.200.0.0/24")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refusing to add to set 'blocked': it would lock out SSH" in res.stderr and "--force" in res.stderr
    assert "10.200.0.0/24" not in set_cmd(lab, "list", "blocked").stdout  # nothing changed
    res = as_operator("del", "admins", "10.200.0.2")
    assert res.returncode == 1 and "refusing to remove from set 'admins'" in res.stderr, res.stderr
    assert lab.tcp_connect(22) == "open"
    # what spares the session goes through, guarded
    assert as_operator("add", "blocked", "10.200.5.0/24").returncode == 0
    assert as_operator("del", "admins", "10.200.0.77").returncode == 0
    # --force: the operator's own call
    res = as_operator("add", "blocked", "10.200.0.0/24", "--force")
    assert res.returncode == 0, res.stderr
    assert lab.tcp_connect(22, timeout=0.5) == "timeout"
