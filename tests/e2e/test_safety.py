"""An apply that cannot leave a broken firewall: killed at every step, rolled back
when unconfirmed, serialised with another apply, refusing to cut SSH.

Rule set OLD opens port 25 only; NEW opens port 143 only and has an egress program
(so an apply from OLD to NEW also attaches a tcx link). Which one is in force is
read from the wire: a TCP connect from the client namespace to each port.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from bpfwall.lab import CLIENT_V4, SERVER_V4
from bpfwall.scope import Scope

from .conftest import apply, bpfwall, fake_sshd, write

OLD = """\
version: 1
policy: {ingress: drop}
rules:
  - {name: mail, proto: tcp, dport: 25, action: accept}
"""
NEW = """\
version: 1
policy: {ingress: drop}
rules:
  - {name: imap, proto: tcp, dport: 143, action: accept}
  - {name: no-discard, direction: egress, proto: udp, dport: 9, action: drop}
"""


def in_force(lab) -> str:
    """'old', 'new', 'none' (no firewall) or what else the ports say."""
    seen = (lab.tcp_connect(25, timeout=0.5), lab.tcp_connect(143, timeout=0.5))
    return {("open", "timeout"): "old", ("timeout", "open"): "new", ("open", "open"): "none"}.get(
        seen, f"mixed {seen}")


def run_apply(lab, path: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bpfwall.cli", "apply", "-f", path, "-i", lab.server_if, "--netns",
         lab.server_ns, *extra], capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def status(lab) -> tuple[dict, str]:
    res = bpfwall("status", "--netns", lab.server_ns, "--json")
    return json.loads(res.stdout), res.stderr


def start_apply(lab, path: str, *extra: str, **popen) -> subprocess.Popen:
    """An apply of path on the lab's server side, running on while the test acts."""
    return subprocess.Popen(
        [sys.executable, "-m", "bpfwall.cli", "apply", "-f", path, "-i", lab.server_if, "--netns",
         lab.server_ns, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for_line(proc: subprocess.Popen, text: str) -> None:
    """Reads proc's output until a line has text (rich wraps long lines)."""
    while text not in (line := proc.stdout.readline()):
        assert line, f"the command ended without printing {text!r}: {proc.stderr.read()}"


def steps_of(lab, tmp_path, path: str) -> list[str]:
    log = tmp_path / "steps"
    res = run_apply(lab, path, {"BPFWALL_TEST_STEPS": str(log)})
    assert res.returncode == 0, res.stderr
    return log.read_text().split()


def test_apply_killed_at_every_step_leaves_old_or_new_whole(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    steps = steps_of(lab, tmp_path, new)
    assert steps.index("staged") < steps.index("flipped") < steps.index("committed") < steps.index("cleaned")
    assert f"attached:{lab.server_if}" in steps
    for step in steps:
        apply(lab, old)
        assert in_force(lab) == "old"
        res = run_apply(lab, new, {"BPFWALL_TEST_KILL_AT": step})
        assert res.returncode == -signal.SIGKILL, (step, res.stderr)
        expected = "new" if steps.index(step) >= steps.index("flipped") else "old"
        assert in_force(lab) == expected, f"killed at {step}"
        st, err = status(lab)  # repairs what the kill left
        assert st["running"] and all(i["attached"] for i in st["interfaces"]), (step, st)
        assert st["rules_file"].endswith(f"{expected}.yaml"), (step, st)
        # After the commit only the clean-up is left, and it may have nothing to do: the
        # previous generation stays loaded as the idle one.
        if step not in ("compiled", "locked", "loaded", "committed", "cleaned"):
            assert "repaired:" in err, f"killed at {step}: status repaired nothing"
        assert in_force(lab) == expected, f"after repair of a kill at {step}"
        assert status(lab)[1] == "", "a second status finds nothing left to repair"
    # The egress link exists only while NEW is in force.
    egress_pin = Scope(lab.server_ns).link_pin(lab.server_if, "egress")
    apply(lab, old)
    assert not os.path.exists(egress_pin)


# OLD again under another rule name: a different file of the same shape, so that the apply
# of OLD_AGAIN keeps OLD's generation loaded as the idle one, and NEW_SAME_SHAPE refills it.
OLD_AGAIN = OLD.replace("name: mail", "name: smtp")
NEW_SAME_SHAPE = OLD.replace("name: mail", "name: imap").replace("dport: 25", "dport: 143")


def test_refill_killed_at_every_step_leaves_old_or_new_whole(lab, tmp_path):
    """The same for an apply that rewrites the idle generation's tables instead of loading:
    a kill between a table write and the flip leaves the old rule set whole."""
    old, again = write(tmp_path, OLD, "old.yaml"), write(tmp_path, OLD_AGAIN, "again.yaml")
    new = write(tmp_path, NEW_SAME_SHAPE, "new.yaml")
    apply(lab, old)
    apply(lab, again)
    res = run_apply(lab, new, {})
    assert res.returncode == 0 and "the idle one refilled" in res.stdout.replace("\n", " "), res.stdout
    assert in_force(lab) == "new"
    apply(lab, old)
    apply(lab, again)
    steps = steps_of(lab, tmp_path, new)
    for step in steps:
        apply(lab, old)
        apply(lab, again)  # in force: OLD's ports; idle: OLD's generation, which NEW fits
        assert in_force(lab) == "old"
        res = run_apply(lab, new, {"BPFWALL_TEST_KILL_AT": step})
        assert res.returncode == -signal.SIGKILL, (step, res.stderr)
        expected = "new" if steps.index(step) >= steps.index("flipped") else "old"
        assert in_force(lab) == expected, f"killed at {step}"
        st, err = status(lab)
        assert st["running"] and all(i["attached"] for i in st["interfaces"]), (step, st)
        assert st["rules_file"].endswith(f"{'new' if expected == 'new' else 'again'}.yaml"), (step, st)
        assert in_force(lab) == expected, f"after repair of a kill at {step}"
        assert status(lab)[1] == "", "a second status finds nothing left to repair"
        res = run_apply(lab, new, {})  # and the next apply puts NEW in force, whatever was left
        assert res.returncode == 0, (step, res.stderr)
        assert in_force(lab) == "new", f"an apply after a kill at {step}"


PRELOAD = """
import sys
from bpfwall import config, transaction
from bpfwall.scope import Scope
ruleset = config.load(sys.argv[1])
scope = Scope(sys.argv[2])
print(transaction.preload_idle(scope, ruleset, transaction.compile_all(ruleset), scope.read_state().generation))
"""


def preload(lab, path: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELOAD, path, lab.server_ns], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_a_preloaded_idle_generation_is_refilled_and_a_kill_while_preloading_repaired(lab, tmp_path):
    """What the agent does after an apply that loaded anew: a spare copy of the programs
    loaded as the idle generation, which the next apply refills. Killed before its state is
    written, it leaves pins that the next command removes; the rule set in force is untouched."""
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW_SAME_SHAPE, "new.yaml")
    apply(lab, old)
    res = preload(lab, old, {"BPFWALL_TEST_KILL_AT": "pinned"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert in_force(lab) == "old"
    st, err = status(lab)
    assert st["running"] and "repaired:" in err, err
    res = preload(lab, old, {})
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr
    assert preload(lab, old, {}).stdout.strip() == "False"  # one idle generation is enough
    assert in_force(lab) == "old"
    res = run_apply(lab, new, {})
    assert res.returncode == 0 and "the idle one refilled" in res.stdout.replace("\n", " "), res.stdout
    assert in_force(lab) == "new"


@pytest.mark.parametrize("step", ["loaded", "pinned", "journal", "staged", "attached", "journal-complete"])
def test_first_apply_killed_leaves_nothing(lab, tmp_path, step):
    new = write(tmp_path, NEW, "new.yaml")
    step = f"attached:{lab.server_if}" if step == "attached" else step
    res = run_apply(lab, new, {"BPFWALL_TEST_KILL_AT": step})
    assert res.returncode == -signal.SIGKILL
    assert in_force(lab) == "none", step
    st, err = status(lab)
    assert not st["running"] and "repaired:" in err, (step, err)
    assert not os.path.exists(Scope(lab.server_ns).pin_dir), step


def test_unconfirmed_apply_rolls_back_after_the_cli_is_killed(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    before = status(lab)[0]["generation"]
    cli = start_apply(lab, new, "--confirm", "3", start_new_session=True)
    try:
        wait_for_line(cli, "keeping generation")
        cli.kill()  # SIGKILL: the CLI does not get to roll anything back
        cli.wait()
        assert in_force(lab) == "new"
        st = status(lab)[0]
        assert st["awaiting_confirm"]["rollback_to"] == before
        res = run_apply(lab, old, {})
        assert res.returncode == 1 and "awaits confirmation" in res.stderr
        deadline = time.monotonic() + 15
        while status(lab)[0]["generation"] != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert in_force(lab) == "old"
        st = status(lab)[0]
        assert st["generation"] == before and "was not confirmed" in st["notice"]
        assert "awaiting_confirm" not in st
        assert not os.path.exists(Scope(lab.server_ns).link_pin(lab.server_if, "egress"))
    finally:
        if cli.poll() is None:
            cli.kill()


def test_ctrl_c_while_confirming_says_the_rollback_stays_armed(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    before = status(lab)[0]["generation"]
    cli = start_apply(lab, new, "--confirm", "8")  # time enough, on a loaded machine, to be interrupted first
    try:
        wait_for_line(cli, "keeping generation")
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=10)
        assert cli.returncode == 130
        assert "the rollback stays armed" in err and f"back to generation {before}" in err, err
        assert "bpfwall confirm" in err
        deadline = time.monotonic() + 30  # and it does roll back
        while status(lab)[0]["generation"] != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert in_force(lab) == "old"
    finally:
        if cli.poll() is None:
            cli.kill()


def test_confirm_keeps_the_new_rule_set(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    cli = start_apply(lab, new, "--confirm", "60")
    try:
        wait_for_line(cli, "keeping generation")
        res = bpfwall("confirm", "--netns", lab.server_ns)
        assert res.returncode == 0 and "confirmed" in res.stdout, res.stderr
        assert cli.wait(timeout=10) == 0
        assert in_force(lab) == "new"
        assert "awaiting_confirm" not in status(lab)[0]
        res = bpfwall("confirm", "--netns", lab.server_ns)
        assert res.returncode == 1 and "nothing awaits confirmation" in res.stderr
    finally:
        if cli.poll() is None:
            cli.kill()


def test_enter_on_the_terminal_confirms(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    primary, secondary = pty.openpty()
    cli = start_apply(lab, new, "--confirm", "60", stdin=secondary)
    os.close(secondary)
    try:
        wait_for_line(cli, "press Enter here")
        os.write(primary, b"\n")
        assert cli.wait(timeout=10) == 0
        assert "confirmed" in cli.stdout.read()
        assert in_force(lab) == "new" and "awaiting_confirm" not in status(lab)[0]
    finally:
        os.close(primary)
        if cli.poll() is None:
            cli.kill()


def test_unconfirmed_first_apply_leaves_nothing(lab, tmp_path):
    new = write(tmp_path, NEW, "new.yaml")
    res = run_apply(lab, new, {}, "--confirm", "1")
    assert res.returncode == 1 and "was not confirmed within 1 s" in res.stderr, res.stderr
    assert in_force(lab) == "none"
    assert not status(lab)[0]["running"]
    assert not os.path.exists(Scope(lab.server_ns).pin_dir)


def test_two_applies_at_once_are_serialised(lab, tmp_path):
    old, new = write(tmp_path, OLD, "old.yaml"), write(tmp_path, NEW, "new.yaml")
    apply(lab, old)
    again = write(tmp_path, OLD + "# the same rules, so not the no-op of an unchanged file\n", "again.yaml")
    log = tmp_path / "steps"
    first = start_apply(lab, again, env={**os.environ, "BPFWALL_TEST_PAUSE_AT": "staged:2",
                                       "BPFWALL_TEST_STEPS": str(log)})
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "staged" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_apply(lab, new, {})
        assert second.returncode == 0, second.stderr
        assert "waiting for another bpfwall run" in second.stderr
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert in_force(lab) == "new"
    assert status(lab)[0]["rules_file"].endswith("new.yaml")


SSH_OPEN = """\
version: 1
policy: {ingress: drop}
rules:
  - {name: ssh, proto: tcp, dport: 22, src: 10.200.0.0/16, action: accept}
"""


@pytest.mark.parametrize("how", ["env", "sshd", "socket-activated"])
def test_apply_refuses_to_cut_the_ssh_session(lab, tmp_path, how):
    env_only = how == "env"
    old = write(tmp_path, OLD, "old.yaml")
    if env_only:
        env = {"SSH_CONNECTION": f"{CLIENT_V4} 40022 {SERVER_V4} 22"}
    else:  # a session of an sshd, found over netlink (sock_diag) and /proc
        env = {}
        sshd = fake_sshd(lab, activated=how == "socket-activated")
        conn = lab.tcp_session(2222)
        if how == "socket-activated":
            assert sshd.stdout.readline().strip() == "handed over"
    try:
        res = run_apply(lab, old, env)
        assert res.returncode == 1, res.stderr
        assert "lock out SSH" in res.stderr and "--force" in res.stderr
        assert f"{CLIENT_V4}:" in res.stderr and "ingress policy" in res.stderr
        assert not status(lab)[0]["running"], "nothing was applied"
        check = bpfwall("check", "-f", old)
        assert check.returncode == 0  # the host's own namespace has no session to cut
        # check refuses what apply refuses, judged in the same namespace
        check = subprocess.run([sys.executable, "-m", "bpfwall.cli", "check", "-f", old, "--netns", lab.server_ns],
                               capture_output=True, text=True, env={**os.environ, **env})
        assert check.returncode == 1 and "apply would refuse it: refusing to apply: it would lock out SSH" \
            in check.stderr and f"{CLIENT_V4}:" in check.stderr, check.stderr
        ssh_ok = write(tmp_path, SSH_OPEN.replace("22", "22" if env_only else "2222"), "ssh.yaml")
        assert run_apply(lab, ssh_ok, env).returncode == 0
        res = run_apply(lab, old, env, "--force")
        assert res.returncode == 0, res.stderr
    finally:
        if not env_only:
            conn.close()
            sshd.stdin.close()
            sshd.kill()
            sshd.wait()


def test_apply_refuses_when_it_cannot_look_for_sessions(lab, tmp_path):
    """A guard that cannot look guards nothing: apply refuses and says why; --force goes on."""
    old = write(tmp_path, OLD, "old.yaml")
    env = {"BPFWALL_TEST_FAIL_AT": "lockout-lookup"}
    res = run_apply(lab, old, env)
    assert res.returncode == 1 and "cannot look for SSH sessions" in res.stderr and "--force" in res.stderr
    assert not status(lab)[0]["running"]
    check = subprocess.run([sys.executable, "-m", "bpfwall.cli", "check", "-f", old], capture_output=True,
                           text=True, env={**os.environ, **env})
    assert check.returncode == 1 and "cannot look for SSH sessions" in check.stderr  # as apply
    assert run_apply(lab, old, env, "--force").returncode == 0
