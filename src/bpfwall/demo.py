"""`bpfwall demo`: a lab, the example rules, real traffic, and what happened to it."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import config, conntrack, names, stats, transaction
from .lab import Lab
from .scope import Scope, require_root

RULES = os.path.join(os.path.dirname(__file__), "examples", "demo.yaml")

# (what, how, expected) with how = (kind, port, v6, from which side)
PROBES = [
    ("in: TCP 22 (ssh)", ("tcp", 22, False, "client"), "open"),
    ("in: TCP 22 (ssh) over IPv6", ("tcp", 22, True, "client"), "open"),
    ("in: TCP 8080 (web set)", ("tcp", 8080, False, "client"), "open"),
    ("in: TCP 25, listening, no rule", ("tcp", 25, False, "client"), "timeout"),
    ("in: TCP 143, listening, rule reject", ("tcp", 143, False, "client"), "refused"),
    ("in: TCP 143 over IPv6, rule reject", ("tcp", 143, True, "client"), "refused"),
    ("in: UDP 53 (dns)", ("udp", 53, False, "client"), "answered"),
    ("in: UDP 123, listening, no rule", ("udp", 123, False, "client"), "timeout"),
    ("in: UDP 514, rule reject", ("udp", 514, False, "client"), "refused"),
    ("in: ICMP echo", ("ping", 0, False, "client"), "answered"),
    ("in: ICMPv6 echo", ("ping", 0, True, "client"), "answered"),
    ("out: TCP 80 (replies come back)", ("tcp", 80, False, "server"), "open"),
    ("out: TCP 80 over IPv6", ("tcp", 80, True, "server"), "open"),
    ("out: UDP 5353 (replies come back)", ("udp", 5353, False, "server"), "answered"),
    ("out: ICMP echo", ("ping", 0, False, "server"), "answered"),
    ("out: TCP 25, egress rule drop", ("tcp", 25, False, "server"), "timeout"),
]


def probe(lab: Lab, how: tuple[str, int, bool, str]) -> str:
    kind, port, v6, frm = how
    if kind == "tcp":
        return lab.tcp_connect(port, v6, timeout=0.7, frm=frm)
    if kind == "udp":
        return lab.udp_query(port, v6, timeout=0.7, frm=frm)
    return lab.ping(v6, timeout=0.7, frm=frm)


def run_demo(out: Console) -> int:
    require_root()
    with Lab("demo") as lab:
        for port in (22, 8080, 25, 143):
            lab.tcp_server(port)
        for port in (22, 143):
            lab.tcp_server(port, v6=True)
        for port in (53, 123, 514):
            lab.udp_server(port)
        for v6 in (False, True):
            lab.tcp_server(80, v6, on="client")
        lab.tcp_server(25, on="client")
        lab.udp_server(5353, on="client")
        out.print(f"lab: client {lab.client_ns} --veth-- server {lab.server_ns}")

        before = {what: probe(lab, how) for what, how, _ in PROBES}
        ruleset = config.load(RULES)
        scope = Scope(lab.server_ns)
        transaction.apply(scope, ruleset, [lab.server_if])
        out.print(f"applied: bpfwall apply -f {RULES} -i {lab.server_if} --netns {lab.server_ns}\n")

        t = Table("traffic (in: client to server, out: server to client)", "without bpfwall",
                  "with bpfwall", "expected", "")
        failures = 0
        for what, how, expected in PROBES:
            got = probe(lab, how)
            ok = got == expected
            failures += not ok
            t.add_row(what, before[what], got, expected, "[green]ok[/green]" if ok else "[red]FAIL[/red]")
        out.print(t)

        data = stats.collect(scope)
        st = Table("rule", "dir", "action", "packets", "bytes", title="per-rule counters (bpfwall stats)")
        for r in data["rules"]:
            st.add_row(r["name"], r["direction"], r["action"], str(r["packets"]), str(r["bytes"]))
        for direction in ("ingress", "egress"):
            pol = data["policy"][direction]
            st.add_row("(policy)", direction, pol["action"], str(pol["packets"]), str(pol["bytes"]))
        out.print(st)
        d = data["drops"]
        out.print(f"drops: {d['rule']} by rules, {d['policy']} by policy, {d['malformed']} malformed; "
                  f"{data['rejects_sent']} rejects answered")
        flows = conntrack.flows(scope)
        out.print(f"connection table (bpfwall conntrack): {flows['live']} live flows, e.g.")
        for f in [f for f in flows["flows"] if f["proto"] in ("tcp", "udp")][:4]:
            # escaped: rich would take "[fd42:200::2]" for a markup tag and drop it
            src, dst = (escape(names.endpoint(f[a], f[p], f["family"]))
                        for a, p in (("src", "sport"), ("dst", "dport")))
            out.print(f"  {f['proto']} {src} -> {dst} {f['state']}, "
                      f"packets {f['packets'][0]} from the opener / {f['packets'][1]} replies")
    out.print("lab removed" + ("" if not failures else f"; {failures} probe(s) did not behave as expected"))
    return 1 if failures else 0
