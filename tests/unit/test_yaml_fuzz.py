"""Fuzzing the rule-file loader: random and mutated YAML either loads (and compiles) or
is refused with FILE:LINE lines, exit 2. Never a traceback, never another exception.

Mutations start from rule files that use every key, and cut, splice, duplicate,
re-indent, retype and garble them; hypothesis drives them. The CLI is run on a
sample of the same inputs to check the exit status and stderr a user sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfwall import config
from bpfwall.errors import InputError
from bpfwall.transaction import compile_all
from tests.profile import examples

FULL = """\
version: 1
interfaces: [eth1]
group: wheel
policy: {ingress: drop, egress: accept}
sets:
  blocklist:
    type: cidr
    elements: [203.0.113.0/24, "2001:db8:bad::/48"]
  web: {type: port, elements: [80, 443, "8000-8100"]}
conntrack:
  max_entries: 65536
  timeouts: {tcp_established: 3600, udp: 30}
  syn_cookies: {ports: [80], rate: 1000/second, burst: 100}
  port_scan: {ports: 20, window: 10s, ban_for: 1h}
rules:
  - {name: drop-blocklist, src: "@blocklist", action: drop}
  - {name: established, ct: [established, related], action: accept}
  - name: ssh
    proto: tcp
    dport: 22
    src: [10.0.0.0/8, "2001:db8::/32"]
    tcp_flags: "syn,!ack"
    action: accept
    log: 5/second
  - {name: web, proto: tcp, dport: "@web", action: accept, interfaces: [eth1], family: ipv4}
  - {name: ping, proto: icmp, icmp_type: echo-request, icmp_code: 0, action: accept, limit: 10/second}
  - {name: ssh-flood, proto: tcp, dport: 22, limit: {rate: 5/second, burst: 10, per: source, over: true},
     action: ban, ban_for: 10m}
  - {name: dns-out, direction: egress, proto: udp, dport: 53, sport: "1024-65535", action: accept}
  - {name: no-smtp, proto: [tcp, udp], dport: [25, 465], action: reject}
"""
DEMO = open(os.path.join(os.path.dirname(config.__file__), "examples", "demo.yaml")).read()

# What YAML and the rule language give meaning to, and values at the edges.
TOKENS = ["", " ", ":", "- ", "-", "{", "}", "[", "]", ",", "'", '"', "#", "&a", "*a", "!!str", "!!binary",
          "|", ">", "%", "@", "`", "\t", "\n", "\\", "~", "null", "true", "no", "0", "-1", "65536", "1e400",
          "0x10", "99999999999999999999", "1.2.3.4/33", "::/129", "10.0.0.0/8", "fe80::1%eth0", "@web",
          "@nope", "10/second", "0/second", "5/fortnight", "accept", "drop", "ban", "ingress", "egress",
          "tcp", "icmpv6", "syn,!ack", "!!", "établi", "\u202e", "\x00", "a" * 300, "[[[[[[[[", "{a: {b: {c: d}}}",
          "<<: *a", "? x", "--- ", "...", "version", "rules", "sets", "name", "limit", "files", "/etc/shadow"]


@st.composite
def mutated(draw, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["cut", "insert", "token", "dupline", "swaplines", "indent", "truncate"]))
        lines = text.split("\n")
        if op == "cut" and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        elif op == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.text(max_size=12)) + text[i:]
        elif op == "token":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "dupline":
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == "swaplines" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "indent":
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = " " * draw(st.integers(0, 7)) + lines[i].lstrip()
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
    return text


LINE = re.compile(r"^fuzz\.yaml:\d+: \S")


def load_or_refuse(text: str) -> None:
    """The property: a Ruleset that compiles, or an InputError of FILE:LINE lines."""
    try:
        ruleset = config.loads(text, "fuzz.yaml")
    except InputError as exc:
        assert exc.problems, "an error with no message"
        for line in exc.problems:
            assert LINE.match(line), line
        return
    try:
        compile_all(ruleset)
    except ValueError:
        pass  # the CLI reports it as FILE:1 (too large for the data plane): exit 2


inputs = st.one_of(mutated(FULL), mutated(DEMO), st.text(max_size=200),
                   st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))


@settings(max_examples=examples(3000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs)
def test_loader_loads_or_refuses_with_file_and_line(text: str):
    load_or_refuse(text)


def test_unmutated_files_load():
    config.loads(FULL, "fuzz.yaml")
    config.loads(DEMO, "fuzz.yaml")


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(FULL), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))),
       st.binary(max_size=4))
def test_cli_exits_2_with_file_and_line(tmp_path_factory, text: str, junk: bytes):
    """As a user sees it: exit 0 or 2, errors as FILE:LINE lines, no traceback. Raw
    bytes (not UTF-8) go in too."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
    res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "check", "-f", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 2:
        for line in res.stderr.splitlines():
            assert re.match(rf"^{re.escape(str(path))}:\d+: \S", line), line


def _hostile_files(tmp_path) -> dict[str, str]:
    """Rule files an attacker or a careless hand could give: each must be refused quickly."""
    laughs = ["version: 1", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    laughs += ["rules: *a9"]
    fifo = tmp_path / "fifo.netset"
    os.mkfifo(fifo)
    files = {
        "billion-laughs.yaml": "\n".join(laughs) + "\n",
        "huge-scalar.yaml": "version: 1\nrules:\n  - {name: " + "x" * 20_000_000 + ", action: drop}\n",
        "deep.yaml": "version: 1\nrules: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "fifo-set.yaml": f"version: 1\nsets:\n  s: {{type: cidr, files: [{fifo}]}}\n"
                         "rules: [{name: a, action: drop}]\n",
        "zero-set.yaml": "version: 1\nsets:\n  s: {type: cidr, files: [/dev/zero]}\nrules: [{name: a, action: drop}]\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in files} | {"dev-zero-as-rule-file": "/dev/zero"}


def test_hostile_rule_files_are_refused_quickly(tmp_path):
    """Each answered with exit 2 and FILE:LINE, through the CLI a user runs; the time each
    took is printed for the record (a test asserts behaviour, not speed)."""
    import time

    for name, path in _hostile_files(tmp_path).items():
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "check", "-f", path],
                             capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        print(f"{name}: refused in {took:.2f} s: {res.stderr.strip()[:150]}")
        assert res.returncode == 2, (name, res.stderr[-500:])
        assert "Traceback" not in res.stderr
        assert all(re.match(r"^\S+:\d+: ", line) for line in res.stderr.splitlines()), (name, res.stderr[:500])
        assert all(len(line) <= 500 for line in res.stderr.splitlines())


def test_a_set_file_over_the_bound_is_refused_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.netset"
    big.write_text("10.0.0.0/8\n" * 1000)
    monkeypatch.setattr(config, "SET_FILE_MAX_BYTES", 1024)
    try:
        config.loads(f"version: 1\nsets:\n  s: {{type: cidr, files: [{big}]}}\nrules: [{{name: a, action: drop}}]\n",
                     str(tmp_path / "r.yaml"))
    except InputError as exc:
        assert exc.problems == [f"{tmp_path / 'r.yaml'}:3: sets.s.files[0]: set file {big}:1: 11,000 bytes; "
                                "a set file may have at most 1,024"]
    else:
        raise AssertionError("a set file over the bound loaded")
