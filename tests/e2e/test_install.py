"""Packaging: `make install` into a scratch prefix builds the wheel (carrying the compiled
BPF objects), installs it into a fresh virtual environment, and lays down the CLI, the
systemd unit, the example rule file, the man page and bash completion; each is checked
with the tool that would use it."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_install_to_a_prefix(tmp_path):
    prefix, etc = tmp_path / "prefix", tmp_path / "etc"
    res = subprocess.run(["make", "-C", str(REPO), "install", f"PREFIX={prefix}", f"SYSCONFDIR={etc}"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    wheel = next((REPO / "build" / "wheel").glob("bpfwall-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for carried in ("bpfwall/bpf/bpfwall.bpf.o", "bpfwall/bpf/dispatch.bpf.o", "bpfwall/examples/demo.yaml"):
        assert carried in names, carried

    cli = prefix / "bin" / "bpfwall"
    rules = etc / "bpfwall" / "bpfwall.yaml"
    check = subprocess.run([str(cli), "check", "-f", str(rules)], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
    venv_python = prefix / "lib" / "bpfwall" / "venv" / "bin" / "python"
    # Built on the host's own Python, which every user can run, not on root's first python3.
    cfg = (prefix / "lib" / "bpfwall" / "venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in cfg, cfg
    where = subprocess.run([str(venv_python), "-c", "from bpfwall import generation; print(generation.object_path())"],
                           capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(prefix)), "the object comes from the wheel, not the source tree"

    unit = prefix / "lib" / "systemd" / "system" / "bpfwall.service"
    assert f"ExecStart={cli} apply -f {rules}" in unit.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "MANPATH": str(prefix / "share" / "man")})
    assert verify.returncode == 0 and "bpfwall.service" not in verify.stderr, verify.stderr
    agent_unit = prefix / "lib" / "systemd" / "system" / "bpfwall-agent.service"
    assert f"ExecStart={cli} agent --state-dir /var/lib/bpfwall/agent $BPFWALL_AGENT_ARGS" in agent_unit.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", str(agent_unit)], capture_output=True, text=True,
                            env={**os.environ, "MANPATH": str(prefix / "share" / "man")})
    assert verify.returncode == 0 and "bpfwall-agent.service" not in verify.stderr, verify.stderr

    page = prefix / "share" / "man" / "man8" / "bpfwall.8"
    man = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                         env={**os.environ, "MANWIDTH": "100"})
    assert man.returncode == 0 and not man.stderr.strip(), man.stderr
    assert "bpfwall import" in man.stdout and "--confirm" in man.stdout
    yaml_page = prefix / "share" / "man" / "man5" / "bpfwall.yaml.5"
    man = subprocess.run(["man", "--warnings", "-l", str(yaml_page)], capture_output=True, text=True,
                         env={**os.environ, "MANWIDTH": "100"})
    assert man.returncode == 0 and not man.stderr.strip(), man.stderr
    for key in ("icmp_type", "ban_for", "limit", "tcp_flags", "conntrack"):
        assert key in man.stdout, key
    docs = prefix / "share" / "doc" / "bpfwall"
    assert (docs / "rule-language.md").exists() and (docs / "cli.md").exists() and (docs / "README.md").exists()
    assert "_bpfwall_completion" in (prefix / "share" / "bash-completion" / "completions" / "bpfwall").read_text()
    # The example rule file stays the operator's: a second install leaves it alone.
    rules.write_text(rules.read_text() + "# edited\n")
    res = subprocess.run(["make", "-C", str(REPO), "install", f"PREFIX={prefix}", f"SYSCONFDIR={etc}"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and rules.read_text().endswith("# edited\n")
