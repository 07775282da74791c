"""Control-plane latency: full applies, one rule changed, one set element added, beside nft and iptables.

Every command runs as an operator runs it (a new process, wall time), in a
lab namespace; bpfwall's set element is also timed inside the process, which
is the change itself without Python's start-up.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

from .. import transaction
from ..errors import RuntimeFailure
from ..lab import Lab
from ..scope import Scope
from . import rulesets


def _timed(cmd: list[str], stdin: str | None = None, output: list[str] | None = None) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeFailure(f"{' '.join(cmd[:6])}: {res.stderr.strip()[:300]}")
    if output is not None:
        output.append(" ".join(res.stdout.split()))
    return seconds


def _apply_row(apply: list[str], path: str) -> tuple[str, float]:
    """The wall time of an apply, and how it went: a new program loaded or the idle one refilled."""
    said: list[str] = []
    seconds = _timed(apply + [path], output=said)
    return (" (no program loaded)" if "idle one refilled" in said[0] else ""), seconds


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bpfwall.cli", *args]


def measure(n_rules: int, set_size: int, workdir: str, progress: Callable[[str], None]) -> dict:
    rows: list[dict] = []

    def row(tool: str, what: str, seconds: float) -> None:
        rows.append({"tool": tool, "operation": what, "seconds": seconds})

    with Lab("lat") as lab:
        ns = ["ip", "netns", "exec", lab.server_ns]
        full = os.path.join(workdir, "full.yaml")
        changed = os.path.join(workdir, "changed.yaml")
        with open(full, "w") as f:
            f.write(rulesets.service_rules(n_rules))
        with open(changed, "w") as f:
            f.write(rulesets.service_rules(n_rules, changed=n_rules // 2))
        added = os.path.join(workdir, "added.yaml")
        with open(added, "w") as f:  # the file in force (changed.yaml) and one rule more
            f.write(rulesets.service_rules(n_rules, changed=n_rules // 2)
                    + "  - {name: added, proto: tcp, dport: 999, src: 10.1.1.0/24, action: accept}\n")
        apply = _cli("apply", "-i", lab.server_if, "--netns", lab.server_ns, "-f")

        progress(f"latency: bpfwall, {n_rules} rules")
        row("bpfwall", f"apply {n_rules} rules (attach)", _timed(apply + [full]))
        row("bpfwall", f"apply {n_rules} rules again, unchanged", _timed(apply + [full]))
        how, seconds = _apply_row(apply, changed)
        row("bpfwall", f"one rule changed in {n_rules}{how}", seconds)
        how, seconds = _apply_row(apply, added)
        row("bpfwall", f"one rule added to {n_rules}{how}", seconds)
        how, seconds = _apply_row(apply, full)
        row("bpfwall", f"apply {n_rules} rules (swap){how}", seconds)
        how, seconds = _apply_row(apply, changed)
        row("bpfwall", f"one rule changed in {n_rules}, again{how}", seconds)
        _timed(_cli("down", "--netns", lab.server_ns))

        progress(f"latency: nft, {n_rules} rules")
        text = rulesets.nft_rules(n_rules, "inet", flood=False)
        row("nft", f"apply {n_rules} rules", _timed(ns + ["nft", "-f", "-"], text))
        row("nft", f"one rule changed in {n_rules}",
            _timed(ns + ["nft", "-f", "-"], "flush chain inet bwbench c\n" + "\n".join(
                line.replace("    ", "add rule inet bwbench c ", 1)
                for line in rulesets.nft_rules(n_rules, "inet", changed=n_rules // 2, flood=False).splitlines()
                if line.startswith("    ip saddr")) + "\n"))
        row("nft", "one rule changed (nft replace rule)", _replace_nft_rule(ns))
        _timed(ns + ["nft", "delete", "table", "inet", "bwbench"])

        progress(f"latency: iptables, {n_rules} rules")
        row("iptables", f"apply {n_rules} rules (iptables-restore)",
            _timed(ns + ["iptables-legacy-restore"], rulesets.iptables_rules(n_rules, flood=False)))
        row("iptables", f"one rule changed in {n_rules} (iptables-restore)",
            _timed(ns + ["iptables-legacy-restore"],
                   rulesets.iptables_rules(n_rules, changed=n_rules // 2, flood=False)))
        row("iptables", "one rule changed (iptables -R)",
            _timed(ns + ["iptables-legacy", "-R", "INPUT", str(n_rules // 2 + 1), "-s", "10.1.1.0/24",
                         "-p", "tcp", "--dport", "999", "-j", "ACCEPT"]))
        _timed(ns + ["iptables-legacy", "-F", "INPUT"])

        progress(f"latency: a set of {set_size} prefixes")
        rows += _set_rows(lab, set_size, workdir, ns)
    return {"rows": rows, "rules": n_rules, "set_size": set_size}


def _replace_nft_rule(ns: list[str]) -> float:
    out = subprocess.run(ns + ["nft", "-a", "list", "chain", "inet", "bwbench", "c"], capture_output=True,
                         text=True, check=True).stdout
    handles = [line.rsplit("# handle ", 1)[1] for line in out.splitlines() if "# handle" in line and "saddr" in line]
    handle = handles[len(handles) // 2]
    return _timed(ns + ["nft", "replace", "rule", "inet", "bwbench", "c", "handle", handle,
                        "ip", "saddr", "10.1.1.0/24", "tcp", "dport", "999", "accept"])


def _set_rows(lab: Lab, size: int, workdir: str, ns: list[str]) -> list[dict]:
    rows = []
    elements = rulesets.blocklist_elements(random.Random(7), size, ipv6_share=0.0)  # nft's set is ipv4_addr
    netset = os.path.join(workdir, "blocklist.netset")
    with open(netset, "w") as f:
        f.write(rulesets.netset_text(elements))
    path = os.path.join(workdir, "set.yaml")
    with open(path, "w") as f:
        f.write("version: 1\npolicy: {ingress: accept}\nsets:\n  blocklist: {type: cidr, files: [blocklist.netset]}\n"
                "rules:\n  - {name: blocklist, src: \"@blocklist\", action: drop}\n")
    label = f"{len(elements)} prefixes"
    rows.append({"tool": "bpfwall", "operation": f"apply a set of {label}",
                 "seconds": _timed(_cli("apply", "-i", lab.server_if, "--netns", lab.server_ns, "-f", path))})
    scope = Scope(lab.server_ns)
    samples = []
    for i in range(20):
        e = (4, 0x0AC8_6400 | i, 32)  # 10.200.100.i: not in the set
        t0 = time.perf_counter()
        transaction.set_change(scope, "blocklist", [e], add=True)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    rows.append({"tool": "bpfwall", "operation": f"add one element to {label} (in process, median)",
                 "seconds": samples[len(samples) // 2]})
    rows.append({"tool": "bpfwall", "operation": f"add one element to {label} (CLI)",
                 "seconds": _timed(_cli("set", "add", "blocklist", "10.200.101.1", "--netns", lab.server_ns))})
    _timed(_cli("down", "--netns", lab.server_ns))

    # nftables: the same set as an interval set, loaded from a file as an operator would.
    nft_file = os.path.join(workdir, "set.nft")
    with open(nft_file, "w") as f:
        f.write(f"table inet bwbench {{\n{rulesets.nft_interval_set('blocklist', 4, elements)}\n"
                "  chain c {\n    type filter hook input priority 0;\n    ip saddr @blocklist drop\n  }\n}\n")
    rows.append({"tool": "nft", "operation": f"apply a set of {label}",
                 "seconds": _timed(ns + ["nft", "-f", nft_file])})
    rows.append({"tool": "nft", "operation": f"add one element to {label}",
                 "seconds": _timed(ns + ["nft", "add", "element", "inet", "bwbench", "blocklist",
                                         "{ 10.200.101.1 }"])})
    _timed(ns + ["nft", "delete", "table", "inet", "bwbench"])
    return rows
