"""`bpfwall demo`: a lab, the example rules, real traffic, and what happened to it."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from . import config, stats
from .dataplane import Scope, require_root
from .lab import Lab

RULES = os.path.join(os.path.dirname(__file__), "examples", "demo.yaml")

# (what, how, expected) with how = (kind, port, v6)
PROBES = [
    ("TCP 22 (ssh)", ("tcp", 22, False), "open"),
    ("TCP 22 (ssh) over IPv6", ("tcp", 22, True), "open"),
    ("TCP 8080 (web set)", ("tcp", 8080, False), "open"),
    ("TCP 25, listening, no rule", ("tcp", 25, False), "timeout"),
    ("TCP 143, listening, rule reject", ("tcp", 143, False), "refused"),
    ("TCP 143 over IPv6, rule reject", ("tcp", 143, True), "refused"),
    ("UDP 53 (dns)", ("udp", 53, False), "answered"),
    ("UDP 123, listening, no rule", ("udp", 123, False), "timeout"),
    ("UDP 514, rule reject", ("udp", 514, False), "refused"),
    ("ICMP echo", ("ping", 0, False), "answered"),
    ("ICMPv6 echo", ("ping", 0, True), "answered"),
]


def probe(lab: Lab, how: tuple[str, int, bool]) -> str:
    kind, port, v6 = how
    if kind == "tcp":
        return lab.tcp_connect(port, v6, timeout=0.7)
    if kind == "udp":
        return lab.udp_query(port, v6, timeout=0.7)
    return lab.ping(v6, timeout=0.7)


def run_demo(out: Console) -> int:
    require_root()
    with Lab("demo") as lab:
        for port in (22, 8080, 25, 143):
            lab.tcp_server(port)
        for port in (22, 143):
            lab.tcp_server(port, v6=True)
        for port in (53, 123, 514):
            lab.udp_server(port)
        out.print(f"lab: client {lab.client_ns} --veth-- server {lab.server_ns}")

        before = {what: probe(lab, how) for what, how, _ in PROBES}
        ruleset = config.load(RULES)
        scope = Scope(lab.server_ns)
        scope.apply(ruleset, [lab.server_if])
        out.print(f"applied: bpfwall apply -f {RULES} -i {lab.server_if} --netns {lab.server_ns}\n")

        t = Table("traffic from client to server", "without bpfwall", "with bpfwall", "expected", "")
        failures = 0
        for what, how, expected in PROBES:
            got = probe(lab, how)
            ok = got == expected
            failures += not ok
            t.add_row(what, before[what], got, expected, "[green]ok[/green]" if ok else "[red]FAIL[/red]")
        out.print(t)

        data = stats.collect(scope)
        st = Table("rule", "action", "packets", "bytes", title="per-rule counters (bpfwall stats)")
        for r in data["rules"]:
            st.add_row(r["name"], r["action"], str(r["packets"]), str(r["bytes"]))
        pol = data["policy"]["ingress"]
        st.add_row("(policy)", pol["action"], str(pol["packets"]), str(pol["bytes"]))
        out.print(st)
        d = data["drops"]
        out.print(f"drops: {d['rule']} by rules, {d['policy']} by policy, {d['malformed']} malformed; "
                  f"{data['rejects_sent']} rejects answered")
    out.print("lab removed" + ("" if not failures else f"; {failures} probe(s) did not behave as expected"))
    return 1 if failures else 0
