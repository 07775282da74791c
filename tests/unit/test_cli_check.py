"""`bpfwall check` without root: exit 0 on a good file, 2 and one line a problem on a bad one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from bpfwall.cli import main


def test_check_good(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\npolicy: {ingress: drop}\n"
                 "rules:\n  - {name: ssh, proto: tcp, dport: 22, action: accept}\n")
    res = CliRunner().invoke(main, ["check", "-f", str(p), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["rules"] == 1 and info["policy"]["ingress"] == "drop"
    assert info["directions"]["ingress"]["rules"] == 1 and "egress" not in info["directions"]


def test_check_bad_exit_2_one_line_each(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\nrules:\n  - {name: a, proto: tcp, dport: 70000, action: drop}\n"
                 "  - {name: a, src: 300.0.0.0/8, action: drop}\n")
    res = CliRunner().invoke(main, ["check", "-f", str(p)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 3, lines  # port, duplicate name, bad CIDR
    assert all(line.startswith(f"{p}:") for line in lines)
    assert "Traceback" not in res.output


def test_apply_without_interface_is_bad_input(tmp_path, monkeypatch):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\nrules:\n  - {name: a, action: drop}\n")
    monkeypatch.setattr("bpfwall.scope.STATE_ROOT", str(tmp_path / "run"))
    monkeypatch.setattr("bpfwall.netns.exists", lambda name: name == "a-namespace")  # touch no real one
    res = CliRunner().invoke(main, ["apply", "-f", str(p), "--netns", "a-namespace"])
    assert res.exit_code == 2
    assert "no interface" in res.output


def test_a_namespace_name_is_checked_before_anything_runs(tmp_path, monkeypatch):
    """An empty --netns (a script's unset variable) must never mean the host."""
    monkeypatch.setattr("bpfwall.scope.STATE_ROOT", str(tmp_path / "run"))
    for name, why in (("", "the name is empty"), ("..", "not a network namespace name"),
                      ("a/b", "not a network namespace name"), ("x" * 256, "not a network namespace name"),
                      ("nl\nin", "not a network namespace name"), ("no-such-ns-for-sure", "does not exist")):
        res = CliRunner().invoke(main, ["status", "--netns", name])
        assert res.exit_code == 2 and why in res.output, (name, res.output)
    assert not (tmp_path / "run").exists()  # no lock or state file made for any of them


def test_check_json_gives_errors_as_records(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\nrules:\n  - {name: a, proto: tcp, dport: 70000, action: drop}\n")
    res = CliRunner().invoke(main, ["check", "-f", str(p), "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout) == {"errors": [
        {"file": str(p), "line": 3, "message": "rules[0].dport: port 70000 is out of range (0-65535)"}]}
    res = CliRunner().invoke(main, ["check", "-f", str(tmp_path / "missing.yaml"), "--json"])
    assert res.exit_code == 2 and json.loads(res.stdout)["errors"][0]["file"] == str(tmp_path / "missing.yaml")


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("bpfwall 0.")


def test_check_warns_of_a_session_a_first_apply_would_cut(tmp_path, monkeypatch):
    """A file that accepts only tracked connections: apply on a host whose connection table
    starts empty refuses it, so check, without root (which cannot read the live table, and
    where apply's exact guard does not run), warns."""
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\npolicy: {ingress: drop}\nrules:\n"
                 "  - {name: replies, ct: [established], action: accept}\n")
    monkeypatch.setenv("SSH_CONNECTION", "10.200.9.9 50000 10.200.9.1 22")
    monkeypatch.setattr("bpfwall.lockout.from_sshd", lambda: [])
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # the same whether the suite runs as root or not
    res = CliRunner().invoke(main, ["check", "-f", str(p)])
    assert res.exit_code == 0
    assert "warning: SSH session 10.200.9.9:50000 -> 10.200.9.1:22" in res.stderr and "first apply" in res.stderr


def test_new_user_mistakes_are_one_line_errors(tmp_path):
    runner = CliRunner()
    for args in (["top", "--interval", "-1"], ["stats", "--watch", "--interval", "-1"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 2 and "Traceback" not in res.output and "--interval" in res.output
    res = runner.invoke(main, ["import", "iptables", "-"], input="garbage\n")
    assert res.exit_code == 2 and "not iptables-save output" in res.stderr and "bug" not in res.stderr
    dump = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    res = runner.invoke(main, ["import", "iptables", "-", "-o", "/nonexistent/x.yaml"], input=dump)
    assert res.exit_code == 2 and res.stderr.splitlines()[-1] == \
        "-o /nonexistent/x.yaml: cannot write: No such file or directory"
    res = runner.invoke(main, ["import", "nft", "-"], input=json.dumps({"nftables": [
        {"table": {"family": "inet", "name": "f"}},
        {"chain": {"family": "inet", "table": "f", "name": "in", "type": "filter", "hook": "input", "prio": 0,
                   "policy": "drop"}},
        {"rule": {"family": "inet", "table": "f", "chain": "in", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "ipv6-icmp"}},
            {"accept": None}]}}]}))
    assert res.exit_code == 0, res.stderr
    assert "proto: ipv6-icmp" in res.stdout


def test_explain_takes_icmp_types_by_name_per_family(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\npolicy: {ingress: drop}\nrules:\n"
                 "  - {name: ping, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept}\n")

    def verdict(proto: str, src: str, dst: str, icmp_type: str) -> tuple[int, dict | str]:
        res = CliRunner().invoke(main, ["explain", "-f", str(p), "-i", "lo", "--proto", proto, "--src", src,
                                        "--dst", dst, "--icmp-type", icmp_type, "--json"])
        return res.exit_code, json.loads(res.stdout)["rule"] if res.exit_code == 0 else res.output

    assert verdict("icmp", "192.0.2.1", "192.0.2.2", "echo-request") == (0, "ping")
    assert verdict("icmp", "192.0.2.1", "192.0.2.2", "8") == (0, "ping")
    assert verdict("icmpv6", "2001:db8::1", "2001:db8::2", "echo-request") == (0, "ping")  # 128 there
    assert verdict("icmp", "192.0.2.1", "192.0.2.2", "echo-reply") == (0, None)
    code, out = verdict("icmp", "192.0.2.1", "192.0.2.2", "pong")
    assert code == 2 and "--icmp-type: 'pong' is neither" in out


def test_piped_output_is_not_wrapped_at_80_columns(tmp_path):
    p = tmp_path / "a-rather-long-name-for-a-rule-file-so-that-the-line-is-long.yaml"
    p.write_text("version: 1\npolicy: {ingress: accept}\nrules:\n  - {name: a, proto: tcp, dport: 22, action: drop}\n")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "check", "-f", str(p)], capture_output=True,
                         text=True, env=env, timeout=60)
    first = res.stdout.splitlines()[0]
    assert first.startswith(str(p)) and first.endswith("connection tracking off"), res.stdout


def test_explain_with_a_file_refuses_a_namespace(tmp_path, monkeypatch):
    """explain -f judges by the file alone: a --netns given with it is refused, not ignored."""
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\npolicy: {ingress: accept}\n")
    monkeypatch.setattr("bpfwall.netns.exists", lambda name: name == "a-namespace")
    res = CliRunner().invoke(main, ["explain", "-f", str(p), "--netns", "a-namespace", "-i", "lo", "--proto",
                                    "tcp", "--src", "192.0.2.1", "--dst", "192.0.2.2"])
    assert res.exit_code == 2 and "judges by the file alone" in res.output
