"""End to end: the CLI in namespaces, real TCP, UDP and ICMP sockets across a veth pair."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time

from bpfwall.scope import PIN_ROOT, STATE_ROOT, scope_name
from tests.e2e.conftest import apply, bpfwall, stats, write

RULES = """\
version: 1
policy: {ingress: drop}
sets:
  office: {type: cidr, elements: [10.200.0.0/24, "fd42:200::/64"]}
rules:
  - {name: ssh, proto: tcp, dport: 22, src: "@office", action: accept}
  - {name: web, proto: tcp, dport: 8080, action: accept}
  - {name: refuse-imap, proto: tcp, dport: 143, action: reject}
  - {name: dns, proto: udp, dport: 53, action: accept}
  - {name: refuse-syslog, proto: udp, dport: 514, action: reject}
  - {name: count-me, proto: udp, dport: 9999, action: drop}
  - {name: ping, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept}
"""


def test_apply_filters_real_traffic(lab, tmp_path):
    res = apply(lab, write(tmp_path, RULES))
    assert "generation 1" in res.stdout
    # the CLI has exited: the rules live on in the kernel
    for v6 in (False, True):
        assert lab.tcp_connect(22, v6) == "open"
        assert lab.tcp_connect(8080, v6) == "open"
        assert lab.tcp_connect(25, v6, timeout=0.5) == "timeout"  # listening, but no rule: dropped
        assert lab.tcp_connect(143, v6) == "refused"  # listening, but rejected by bpfwall
        assert lab.udp_query(53, v6) == "answered"
        assert lab.udp_query(123, v6, timeout=0.5) == "timeout"
        assert lab.udp_query(514, v6) == "refused"
        assert lab.ping(v6) == "answered"


def test_counters_equal_packets_sent(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    sent = 37
    for _ in range(sent):
        assert lab.udp_query(9999, timeout=0.05) == "timeout"
    data = stats(lab)
    rule = next(r for r in data["rules"] if r["name"] == "count-me")
    assert rule["packets"] == sent
    assert rule["bytes"] == sent * (14 + 20 + 8 + 4)  # Ethernet + IPv4 + UDP + "ping"
    assert data["drops"]["rule"] >= sent
    for _ in range(5):
        lab.tcp_connect(8080)
    web = next(r for r in data["rules"] if r["name"] == "web")
    assert web["packets"] == 0
    assert next(r for r in stats(lab)["rules"] if r["name"] == "web")["packets"] >= 5 * 3


def test_counters_last_across_applies_of_unchanged_rules(lab, tmp_path):
    """A rule keeps its counters while its name and match stay; a changed match starts at zero."""
    path = write(tmp_path, RULES)
    apply(lab, path)
    for _ in range(7):
        assert lab.udp_query(9999, timeout=0.05) == "timeout"
    for _ in range(3):
        assert lab.udp_query(53) == "answered"

    def packets(name: str) -> int:
        return next(r["packets"] for r in stats(lab)["rules"] if r["name"] == name)

    apply(lab, path)  # the same file: everything carries
    assert packets("count-me") == 7 and packets("dns") == 3
    for _ in range(2):
        lab.udp_query(9999, timeout=0.05)
    assert packets("count-me") == 9
    # count-me's action changes (it keeps its counts); dns' match changes (it restarts)
    apply(lab, write(tmp_path, RULES.replace("dport: 9999, action: drop", "dport: 9999, action: reject")
                     .replace("proto: udp, dport: 53,", "proto: udp, dport: [53, 54],"), "b.yaml"))
    data = stats(lab)
    assert packets("count-me") == 9 and packets("dns") == 0
    assert data["drops"]["rule"] >= 9  # drops by reason carry too


def test_counters_per_interface(lab, tmp_path):
    """Each protected interface has its own counters; the totals are their sum."""
    extra, peer = f"{lab.server_if}x", f"{lab.server_if}y"
    subprocess.run(["ip", "-n", lab.server_ns, "link", "add", extra, "type", "veth", "peer", "name", peer],
                   check=True)
    subprocess.run(["ip", "-n", lab.server_ns, "link", "set", extra, "up"], check=True)
    apply(lab, write(tmp_path, RULES), "-i", extra)
    for _ in range(6):
        lab.udp_query(9999, timeout=0.05)

    def count_me(*args: str) -> int:
        res = bpfwall("stats", "--netns", lab.server_ns, "--json", *args)
        assert res.returncode == 0, res.stderr
        return next(r["packets"] for r in json.loads(res.stdout)["rules"] if r["name"] == "count-me")

    assert count_me("-i", lab.server_if) == 6
    assert count_me("-i", extra) == 0
    assert count_me() == 6
    res = bpfwall("stats", "--netns", lab.server_ns, "-i", "nosuch0")
    assert res.returncode == 1 and "not protected" in res.stderr
    # per interface counts carry across an apply too
    apply(lab, write(tmp_path, RULES))
    assert count_me("-i", lab.server_if) == 6


def test_reapply_while_traffic_flows(lab, tmp_path):
    """Swapping rule sets under load loses no packet that both sets accept."""
    a = write(tmp_path, RULES, "a.yaml")
    b = write(tmp_path, RULES.replace("dport: 8080, action: accept", "dport: 8080, action: drop"), "b.yaml")
    apply(lab, a)
    stop = threading.Event()
    results: list[str] = []

    def hammer():
        while not stop.is_set():
            results.append(lab.udp_query(53, timeout=0.5))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for i in range(12):
            apply(lab, b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join()
    assert len(results) > 50
    assert results.count("answered") == len(results), results
    # the last apply was a.yaml: 8080 open again, and the generation moved on
    assert lab.tcp_connect(8080) == "open"
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert st["generation"] == 13
    apply(lab, b)
    assert lab.tcp_connect(8080, timeout=0.5) == "timeout"


def test_status_explain_and_down(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert st["running"] and st["interfaces"][0]["name"] == lab.server_if
    assert st["interfaces"][0]["attached"] and st["interfaces"][0]["mode"] == "native"

    res = bpfwall("explain", "--netns", lab.server_ns, "-i", lab.server_if, "--proto", "tcp",
                  "--src", "10.200.0.2", "--dst", "10.200.0.1", "--dport", "22", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["verdict"], out["rule"], out["agree"]) == ("pass", "ssh", True)
    res = bpfwall("explain", "--netns", lab.server_ns, "-i", lab.server_if, "--proto", "tcp",
                  "--src", "10.200.7.2", "--dst", "10.200.0.1", "--dport", "22", "--json")
    out = json.loads(res.stdout)
    assert (out["verdict"], out["rule"], out["decided_by"], out["agree"]) == ("drop", None, "policy", True)
    res = bpfwall("explain", "--netns", lab.server_ns, "-i", lab.server_if, "--proto", "udp",
                  "--src", "fd42:200::2", "--dst", "fd42:200::1", "--dport", "514")
    assert res.returncode == 0 and "refuse-syslog" in res.stdout and "TX" in res.stdout

    res = bpfwall("down", "--netns", lab.server_ns)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(os.path.join(PIN_ROOT, scope_name(lab.server_ns)))
    assert not os.path.exists(os.path.join(STATE_ROOT, scope_name(lab.server_ns) + ".json"))
    link = subprocess.run(["ip", "-n", lab.server_ns, "link", "show", lab.server_if],
                          capture_output=True, text=True).stdout
    assert "xdp" not in link
    assert lab.tcp_connect(25) == "open"  # nothing filters any more
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert not st["running"]
    assert bpfwall("stats", "--netns", lab.server_ns).returncode == 1


def test_generic_mode(lab, tmp_path):
    apply(lab, write(tmp_path, RULES), "--mode", "generic")
    assert lab.tcp_connect(22) == "open"
    assert lab.tcp_connect(25, timeout=0.5) == "timeout"
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert st["interfaces"][0]["mode"] == "generic"
    res = bpfwall("apply", "-f", write(tmp_path, RULES), "-i", lab.server_if, "--netns", lab.server_ns)
    assert res.returncode == 1 and "generic mode" in res.stderr


def test_bad_input_changes_nothing(lab, tmp_path):
    apply(lab, write(tmp_path, RULES))
    bad = write(tmp_path, RULES.replace("dport: 8080", "dport: 80800"), "bad.yaml")
    res = bpfwall("apply", "-f", bad, "-i", lab.server_if, "--netns", lab.server_ns)
    assert res.returncode == 2
    assert res.stderr.strip() == f"{bad}:7: rules[1].dport: port 80800 is out of range (0-65535)"
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert st["generation"] == 1
    assert lab.tcp_connect(8080) == "open" and lab.tcp_connect(25, timeout=0.5) == "timeout"


def test_runtime_errors_are_one_line_exit_1(lab, tmp_path):
    rules = write(tmp_path, RULES)
    res = bpfwall("apply", "-f", rules, "-i", "nosuchdev0", "--netns", lab.server_ns)
    assert res.returncode == 1
    assert res.stderr.strip() == f"bpfwall: interface 'nosuchdev0' does not exist in network namespace " \
                                 f"'{lab.server_ns}'"
    res = bpfwall("apply", "-f", rules, "-i", lab.server_if, "--netns", "bpfwall-no-such-ns")
    assert res.returncode == 2  # a name that is no namespace is bad input, found before anything runs
    assert res.stderr.strip() == ("bpfwall: --netns: network namespace 'bpfwall-no-such-ns' does not exist "
                                  "('ip netns list' names those that do)")
    assert "Traceback" not in res.stderr


def test_check_works_and_apply_refuses_without_root(lab):
    """Drops to nobody in a child (the venv's interpreter is under /root, so no exec)."""
    # Imported before dropping privileges: this machine's Python lives under /root,
    # which nobody cannot read (config, lockout, neighbours and rich are imported lazily by the CLI).
    import pyroute2  # noqa: F401
    import rich.console  # noqa: F401

    from bpfwall import cli, config, lockout, neighbours  # noqa: F401

    d = tempfile.mkdtemp()
    os.chmod(d, 0o755)
    path = os.path.join(d, "rules.yaml")
    with open(path, "w") as f:
        f.write(RULES)
    os.chmod(path, 0o644)

    def as_nobody(args: list[str]) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                cli.main(args, standalone_mode=True)
            except SystemExit as exc:
                os._exit(exc.code if isinstance(exc.code, int) else 0)
            os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    try:
        assert as_nobody(["check", "-f", path]) == 0
        assert as_nobody(["apply", "-f", path, "-i", lab.server_if, "--netns", lab.server_ns]) == 1
    finally:
        os.unlink(path)
        os.rmdir(d)


def test_stats_watch_refreshes_under_a_terminal(lab, tmp_path):
    import pty
    import select
    import signal
    import sys

    apply(lab, write(tmp_path, RULES))
    pid, fd = pty.fork()
    if pid == 0:
        # A run started in the background (CI under nohup ... &) ignores SIGINT, and an
        # ignored signal stays ignored across exec: give the CLI the default back.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-m", "bpfwall.cli", "stats", "--watch",
                                  "--interval", "0.2", "--netns", lab.server_ns])
    out = b""
    deadline = time.monotonic() + 10
    while out.count(b"pps") < 3 and time.monotonic() < deadline:
        lab.tcp_connect(22)
        try:
            out += os.read(fd, 65536)
        except OSError:
            break
    os.kill(pid, signal.SIGINT)
    # Keep reading while it exits: its last redraw must not block on a full terminal.
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
            break
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                pass
    status = done[1]
    os.close(fd)
    assert out.count(b"pps") >= 3, out[-2000:]
    assert b"Traceback" not in out
    assert os.waitstatus_to_exitcode(status) in (0, 130)


def test_interface_deleted_under_bpfwall(lab, tmp_path):
    """status reports a protected interface that vanished; the next apply forgets it cleanly."""
    extra, peer = f"{lab.server_if}x", f"{lab.server_if}y"
    subprocess.run(["ip", "-n", lab.server_ns, "link", "add", extra, "type", "veth", "peer", "name", peer],
                   check=True)
    subprocess.run(["ip", "-n", lab.server_ns, "link", "set", extra, "up"], check=True)
    rules = write(tmp_path, RULES)
    apply(lab, rules, "-i", extra)
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert sorted(i["name"] for i in st["interfaces"]) == sorted([lab.server_if, extra])

    subprocess.run(["ip", "-n", lab.server_ns, "link", "del", extra], check=True)
    res = bpfwall("status", "--netns", lab.server_ns)
    assert res.returncode == 1 and "interface is gone" in res.stdout

    res = apply(lab, rules)
    assert f"{extra}: interface is gone" in res.stderr
    assert not os.path.exists(os.path.join(PIN_ROOT, scope_name(lab.server_ns), f"link-{extra}"))
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert [i["name"] for i in st["interfaces"]] == [lab.server_if] and st["interfaces"][0]["attached"]
    assert lab.tcp_connect(22) == "open"


def test_show_diff_and_status_know_what_is_in_force(lab, tmp_path):
    path = write(tmp_path, RULES)
    apply(lab, path)
    ns = ("--netns", lab.server_ns)
    assert bpfwall("set", "add", "office", "192.0.2.7", *ns).returncode == 0  # a live change
    # show: a rule file that apply takes back to the same rules, live elements included
    res = bpfwall("show", *ns)
    assert res.returncode == 0, res.stderr
    assert "- 192.0.2.7\n" in res.stdout and "name: refuse-imap" in res.stdout
    shown = write(tmp_path, res.stdout, "shown.yaml")
    res = bpfwall("check", "-f", shown, "--diff", *ns)
    assert res.returncode == 0 and "no change" in res.stdout, res.stdout + res.stderr
    brief = bpfwall("show", "--no-elements", *ns).stdout
    assert "192.0.2.7" not in brief and "3 elements, not shown" in brief
    assert bpfwall("status", *ns).stdout.count("differs") == 0
    # the file on disk changes: check --diff says what, status says that it differs
    changed = RULES.replace("dport: 8080", "dport: 8081").replace(
        "  - {name: count-me, proto: udp, dport: 9999, action: drop}\n", "") + \
        "  - {name: new-one, proto: tcp, dport: 2222, action: accept}\n"
    with open(path, "w") as f:
        f.write(changed.replace("policy: {ingress: drop}", "policy: {ingress: accept}"))
    res = bpfwall("check", "-f", path, "--diff", *ns)
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert "+ rule new-one (ingress)" in out and "- rule count-me (ingress)" in out
    assert "~ rule web (ingress): dport: 8080 -> 8081" in out
    assert any(line.startswith("~ policy:") for line in out)
    assert any(line.startswith("~ set office: +0 -1 elements; removes 192.0.2.7") for line in out), out
    data = json.loads(bpfwall("check", "-f", path, "--diff", "--json", *ns).stdout)
    assert data["differs"] and data["rules"]["changed"][0]["fields"]["dport"] == {"from": 8080, "to": 8081}
    status = bpfwall("status", *ns)
    assert "differs from what is in force" in status.stdout and "--diff --netns" in status.stdout
    # without --netns: the scopes in namespaces are named
    res = bpfwall("status")
    assert lab.server_ns in res.stdout, res.stdout
    assert lab.server_ns in json.loads(bpfwall("status", "--json").stdout)["namespaces"]
    res = bpfwall("stats")
    assert res.returncode == 1 and lab.server_ns in res.stderr and "--netns" in res.stderr
    # a hint names the namespace it is about
    res = bpfwall("show", "--netns", lab.client_ns)
    assert res.returncode == 1 and f"'bpfwall apply --netns {lab.client_ns}'" in res.stderr, res.stderr


BAD_NAMESPACES = ("", "..", ".", "a/b", "x" * 300, "tab\there")


def test_an_empty_unknown_or_malformed_namespace_is_refused_before_anything_runs(tmp_path):
    """A script's unset variable (`--netns "$NS"`) must never mean the host: an empty,
    malformed or unknown name is exit 2 on every verb, and no lock file is left for it."""
    unknown = f"bpfwall-nosuch-{os.getpid()}"
    rules = write(tmp_path, "version: 1\npolicy: {ingress: drop}\n")
    host_before = json.loads(bpfwall("status", "--json").stdout)["running"]
    verbs = (("apply", "-f", rules, "-i", "lo"), ("status",), ("stats",), ("show",), ("conntrack",), ("bans",),
             ("down",), ("set", "list", "s"), ("log",), ("check", "-f", rules, "--diff"))
    for name in (*BAD_NAMESPACES, unknown):
        for verb in verbs:
            res = bpfwall(*verb, "--netns", name)
            assert res.returncode == 2, (verb, name, res.stdout, res.stderr)
            assert res.stderr.startswith("bpfwall: --netns: ") and len(res.stderr.splitlines()) == 1, res.stderr
    left = os.listdir(STATE_ROOT) if os.path.isdir(STATE_ROOT) else []
    assert not [f for f in left if unknown in f or f.startswith("netns-.")]
    assert json.loads(bpfwall("status", "--json").stdout)["running"] == host_before  # the host untouched


def test_down_of_an_interface_bpfwall_does_not_protect_fails(lab, tmp_path):
    apply(lab, write(tmp_path, "version: 1\npolicy: {ingress: accept}\n"))
    res = bpfwall("down", "--netns", lab.server_ns, "-i", "nosuch0")
    assert res.returncode == 1 and "nosuch0: not protected by bpfwall" in res.stderr, res.stderr
    assert json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)["running"]
    res = bpfwall("down", "--netns", lab.server_ns, "-i", lab.server_if, "-i", "nosuch0")
    assert res.returncode == 1 and f"detached from {lab.server_if}" in res.stdout  # the real one still goes
    assert bpfwall("down", "--netns", lab.server_ns).returncode == 0  # nothing left: idempotent


def test_check_diff_with_nothing_applied_is_not_a_difference(lab, tmp_path):
    """Exit 1 means "an apply would change something"; nothing in force is another answer."""
    rules = write(tmp_path, "version: 1\npolicy: {ingress: accept}\n")
    res = bpfwall("check", "-f", rules, "--diff", "--netns", lab.server_ns)
    assert res.returncode == 2 and "nothing is applied in network namespace" in res.stderr, res.stderr
    res = bpfwall("check", "-f", rules, "--diff", "--json", "--netns", lab.server_ns)
    assert res.returncode == 2 and "nothing is applied" in json.loads(res.stdout)["errors"][0]["message"]
    apply(lab, rules)
    assert bpfwall("check", "-f", rules, "--diff", "--netns", lab.server_ns).returncode == 0


def test_check_refuses_what_apply_would_refuse_in_the_namespace(lab, tmp_path):
    """A valid file that apply would still refuse here is exit 1 from check too, with why."""
    group = write(tmp_path, "version: 1\ngroup: bpfwall-no-such-group\npolicy: {ingress: accept}\n", "g.yaml")
    iface = write(tmp_path, "version: 1\ninterfaces: [bwnosuch0]\npolicy: {ingress: accept}\n", "i.yaml")
    for path, why in ((group, "group 'bpfwall-no-such-group'"),
                      (iface, f"interface 'bwnosuch0' (interfaces:) does not exist in network namespace "
                              f"'{lab.server_ns}'")):
        res = bpfwall("check", "-f", path, "--netns", lab.server_ns)
        assert res.returncode == 1 and f"apply would refuse it: {why}" in res.stderr, res.stderr
        res = bpfwall("check", "-f", path, "--netns", lab.server_ns, "--json")
        assert res.returncode == 1 and why in json.loads(res.stdout)["refused"][0]
        assert bpfwall("apply", "-f", path, "--netns", lab.server_ns, *(
            ("-i", lab.server_if) if path == group else ())).returncode == 1  # as apply says
    ok = write(tmp_path, f"version: 1\ninterfaces: [{lab.server_if}]\npolicy: {{ingress: accept}}\n", "ok.yaml")
    assert bpfwall("check", "-f", ok, "--netns", lab.server_ns).returncode == 0
