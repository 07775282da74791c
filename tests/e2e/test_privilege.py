"""Least privilege: what works without root, what a member of the rule file's group may
read, and what everyone else is told. The commands run in a forked child that has
dropped to nobody (no capabilities), because the interpreter of this machine lives
under /root, which nobody cannot enter: the child keeps the one already loaded."""

from __future__ import annotations

import grp
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from click.testing import CliRunner

from bpfwall import cli, exporter, stats  # noqa: F401  (loaded before the fork: nobody cannot import)
from bpfwall.scope import PIN_ROOT, STATE_ROOT, Scope

from .conftest import apply, bpfwall, write

NOBODY, NOGROUP = 65534, 65534

RULES = """\
version: 1
policy: {{ingress: drop}}
{group}rules:
  - {{name: mail, proto: tcp, dport: 25, action: accept}}
"""


def run_as(args: list[str], groups: list[int], warm: bool = True) -> tuple[int, str, str]:
    """Runs the CLI as nobody with the supplementary groups given: (exit, stdout, stderr).
    warm: run it as root in this process first, so the child finds every module it
    imports lazily already loaded (only for commands that change nothing)."""
    if warm:
        CliRunner().invoke(cli.main, args)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)  # pytest had put its capture there
            sys.stderr = open(2, "w", closefd=False)
            os.setgroups(groups)
            os.setgid(NOGROUP)
            os.setuid(NOBODY)
            cli.main(args, prog_name="bpfwall")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # a traceback is a failure the test shows
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


@pytest.fixture
def readers():
    """A group of this test's own, removed afterwards."""
    name = f"bpfwr{os.getpid()}"
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=False)


@pytest.fixture
def public_dir():
    """A directory nobody may read (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="bpfwall-test-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_check_and_explain_file_need_no_root(public_dir):
    path = os.path.join(public_dir, "rules.yaml")
    with open(path, "w") as f:
        f.write(RULES.format(group=""))
    os.chmod(path, 0o644)
    code, out, err = run_as(["check", "-f", path], [])
    assert code == 0 and "OK" in out, err
    code, out, err = run_as(["explain", "-f", path, "--proto", "tcp", "--src", "10.200.0.1",
                             "--dst", "10.200.0.2", "--dport", "25", "--json"], [])
    assert code == 0, err
    assert json.loads(out)["rule"] == "mail"
    dump = os.path.join(public_dir, "rules.v4")
    with open(dump, "w") as f:
        f.write("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 25 -j ACCEPT\nCOMMIT\n")
    os.chmod(dump, 0o644)
    code, out, err = run_as(["import", "iptables", dump], [])
    assert code == 0 and "dport: 25" in out, err
    code, out, err = run_as(["apply", "-f", path, "-i", "lo"], [], warm=False)
    assert code == 1 and "needs root" in err


def test_pins_and_state_are_root_only_without_a_group(lab, tmp_path):
    apply(lab, write(tmp_path, RULES.format(group="")))
    scope = Scope(lab.server_ns)
    state = scope.read_state()
    for path in (scope.pin_dir, scope.gen_dir(state.generation)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    for root, _dirs, files in os.walk(scope.pin_dir):
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(scope.state_path).st_mode) == 0o600
    code, _, err = run_as(["stats", "--netns", lab.server_ns, "--json"], [])
    assert code == 1 and "permission denied" in err and "group" in err, err
    assert "Traceback" not in err


def test_group_members_read_stats_and_status(lab, tmp_path, readers):
    name, gid = readers
    apply(lab, write(tmp_path, RULES.format(group=f"group: {name}\n")))
    assert lab.tcp_connect(25) == "open"
    scope = Scope(lab.server_ns)
    assert os.stat(scope.state_path).st_gid == gid
    code, out, err = run_as(["stats", "--netns", lab.server_ns, "--json"], [gid])
    assert code == 0, err
    data = json.loads(out)
    assert next(r for r in data["rules"] if r["name"] == "mail")["packets"] >= 1
    code, out, err = run_as(["status", "--netns", lab.server_ns, "--json"], [gid])
    assert code == 0, err
    assert json.loads(out)["running"]
    # The group reads; it does not write: links and programs stay root's.
    link = scope.link_pin(lab.server_if)
    assert stat.S_IMODE(os.stat(link).st_mode) == 0o600
    # Not in the group: told what is missing, by name.
    code, _, err = run_as(["stats", "--netns", lab.server_ns], [])
    assert code == 1 and f"group '{name}'" in err, err
    assert stat.S_IMODE(os.stat(PIN_ROOT).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(STATE_ROOT).st_mode) == 0o711
    # Dropping the group takes the access back.
    apply(lab, write(tmp_path, RULES.format(group=""), "private.yaml"))
    code, _, err = run_as(["stats", "--netns", lab.server_ns], [gid])
    assert code == 1 and "permission denied" in err


def collect_as_nobody(ns: str, groups: list[int]) -> str:
    """One exporter scrape (the collector, in a child dropped to nobody), as text."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter.BpfwallCollector(lambda: [ns]))
    generate_latest(registry)  # as root first: every module it imports is loaded before the fork
    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            os.setgroups(groups)
            os.setgid(NOGROUP)
            os.setuid(NOBODY)
            os.write(write_end, generate_latest(registry))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return text


def test_group_members_scrape_the_exporter(lab, tmp_path, readers):
    name, gid = readers
    apply(lab, write(tmp_path, RULES.format(group=f"group: {name}\n")))
    assert lab.tcp_connect(25) == "open"
    text = collect_as_nobody(lab.server_ns, [gid])
    assert f'bpfwall_up{{netns="{lab.server_ns}"}} 1.0' in text
    assert 'bpfwall_rule_packets_total{action="accept",direction="ingress",interface="' in text
    # not a member: down, not a crash
    assert f'bpfwall_up{{netns="{lab.server_ns}"}} 0.0' in collect_as_nobody(lab.server_ns, [])
    code, _, err = run_as(["exporter", "--netns", lab.server_ns, "--listen", "127.0.0.1:1"], [], warm=False)
    assert code == 1 and f"group '{name}'" in err, err  # and the exporter says why at start


def test_unknown_group_is_refused(lab, tmp_path):
    res = bpfwall("apply", "-f", write(tmp_path, RULES.format(group="group: no-such-group-here\n")),
                  "-i", lab.server_if, "--netns", lab.server_ns)
    assert res.returncode == 1 and "does not exist" in res.stderr
    assert not Scope(lab.server_ns).read_state()


def test_exporter_listens_on_loopback_by_default():
    assert "127.0.0.1:9101" in io.StringIO(bpfwall("exporter", "--help").stdout).read()
