"""`bpfwall check` without root: exit 0 on a good file, 2 and one line a problem on a bad one."""

from __future__ import annotations

import json

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
    monkeypatch.setattr("bpfwall.dataplane.STATE_ROOT", str(tmp_path / "run"))
    res = CliRunner().invoke(main, ["apply", "-f", str(p), "--netns", "no-such-ns-for-sure"])
    assert res.exit_code == 2
    assert "no interface" in res.output
