"""End to end, stateful: the classic host policy with real sockets across the veth pair.

The protected (server) side drops everything inbound except replies to its own
connections; it connects out over TCP, UDP and ICMP, IPv4 and IPv6, while the
other side cannot connect in; an egress rule stops one outgoing port.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from bpfwall import scope as scope_mod
from bpfwall.lab import Lab
from bpfwall.scope import PIN_ROOT, scope_name
from tests.e2e.conftest import apply, bpfwall, stats, write

HOST = """\
version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: replies, ct: [established, related], action: accept}
  - {name: no-smtp-out, direction: egress, proto: tcp, dport: 25, action: drop}
"""


@pytest.fixture
def lab():
    scope_mod.ensure_bpffs()
    with Lab("ct") as lab:
        for v6 in (False, True):
            for port in (80, 25):
                lab.tcp_server(port, v6, on="client")
            lab.tcp_echo_server(7, v6, on="client")
            lab.udp_server(53, v6, on="client")
            lab.tcp_server(8080, v6)  # a service on the protected side, not opened by any rule
        yield lab


def conntrack(lab: Lab) -> dict:
    res = bpfwall("conntrack", "--netns", lab.server_ns, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_host_connects_out_and_nobody_connects_in(lab, tmp_path, v6):
    apply(lab, write(tmp_path, HOST))
    assert lab.tcp_connect(80, v6, frm="server") == "open"
    assert lab.udp_query(53, v6, frm="server") == "answered"
    assert lab.ping(v6, frm="server") == "answered"
    assert lab.tcp_connect(25, v6, frm="server", timeout=0.5) == "timeout"  # the egress rule
    assert lab.tcp_connect(8080, v6, timeout=0.5) == "timeout"  # no inbound rule
    assert lab.ping(v6, timeout=0.5) == "timeout"

    ct = conntrack(lab)
    server = "fd42:200::1" if v6 else "10.200.0.1"
    web = [f for f in ct["flows"] if f["proto"] == "tcp" and f["dport"] == 80 and f["src"] == server]
    assert web and web[0]["state"] in ("time_wait", "fin_wait", "established", "close")
    assert web[0]["packets"][1] >= 2  # the replies were counted
    dns = [f for f in ct["flows"] if f["proto"] == "udp" and f["dport"] == 53]
    assert dns and dns[0]["state"] == "replied"
    assert not [f for f in ct["flows"] if f["dport"] == 8080]  # dropped SYNs leave no flow
    assert not [f for f in ct["flows"] if f["dport"] == 25]  # nor do dropped outgoing ones

    # The table, piped (80 columns, no terminal): every address whole, IPv6 in brackets.
    res = bpfwall("conntrack", "--netns", lab.server_ns)
    assert res.returncode == 0, res.stderr
    client = "fd42:200::2" if v6 else "10.200.0.2"
    assert (f"[{client}]:80" if v6 else f"{client}:80") in res.stdout, res.stdout
    assert (f"[{server}]:" if v6 else f"{server}:") in res.stdout and "…" not in res.stdout

    rules = {(r["name"], r["direction"]): r["packets"] for r in stats(lab)["rules"]}
    assert rules[("replies", "ingress")] >= 4
    assert rules[("no-smtp-out", "egress")] >= 1


def test_egress_policy_drop_with_rules_out(lab, tmp_path):
    rules = """\
version: 1
policy: {ingress: drop, egress: drop}
rules:
  - {name: replies-in, ct: [established, related], action: accept}
  - {name: replies-out, direction: egress, ct: [established, related], action: accept}
  - {name: web-out, direction: egress, proto: tcp, dport: 80, action: accept}
  - {name: dns-out, direction: egress, proto: udp, dport: 53, action: accept}
  - {name: ping-in, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept}
"""
    apply(lab, write(tmp_path, rules))
    for v6 in (False, True):
        assert lab.tcp_connect(80, v6, frm="server") == "open"
        assert lab.udp_query(53, v6, frm="server") == "answered"
        assert lab.tcp_connect(7, v6, frm="server", timeout=0.5) == "timeout"  # no egress rule
        assert lab.ping(v6) == "answered"  # accepted in, so the reply may leave
        assert lab.ping(v6, frm="server", timeout=0.5) == "timeout"


def test_reapply_keeps_open_connections(lab, tmp_path):
    apply(lab, write(tmp_path, HOST, "a.yaml"))
    sessions = [lab.tcp_session(7, v6, frm="server") for v6 in (False, True)]
    try:
        for s in sessions:
            s.sendall(b"before")
            assert s.recv(100) == b"before"
        changed = HOST + "  - {name: extra, proto: udp, dport: 9999, action: drop}\n"

        def echo_flows() -> dict:
            return {(f["src"], f["sport"]): f for f in conntrack(lab)["flows"] if f["dport"] == 7}

        before = echo_flows()
        assert len(before) == 2
        apply(lab, write(tmp_path, changed, "b.yaml"))
        for s in sessions:
            s.sendall(b"after")
            assert s.recv(100) == b"after"
        after = echo_flows()
        assert after.keys() == before.keys()  # the same flows, carried over, not new ones
        for k, f in after.items():
            assert f["age"] >= before[k]["age"] and f["packets"][1] > before[k]["packets"][1]
        st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
        assert st["generation"] == 2 and st["interfaces"][0]["egress"]
    finally:
        for s in sessions:
            s.close()


def test_down_removes_egress_link_and_table(lab, tmp_path):
    apply(lab, write(tmp_path, HOST))
    pins = os.path.join(PIN_ROOT, scope_name(lab.server_ns))
    assert {"conntrack", "ct_stats", f"tcx-{lab.server_if}"} <= set(os.listdir(pins))
    assert lab.tcp_connect(25, frm="server", timeout=0.5) == "timeout"
    # a rule set without ct or egress rules needs no egress program and no table
    apply(lab, write(tmp_path, "version: 1\npolicy: {ingress: accept}\nrules: []\n", "open.yaml"))
    assert {"conntrack", "ct_stats", f"tcx-{lab.server_if}"}.isdisjoint(os.listdir(pins))
    assert lab.tcp_connect(25, frm="server") == "open"
    apply(lab, write(tmp_path, HOST))
    assert bpfwall("down", "--netns", lab.server_ns).returncode == 0
    assert not os.path.exists(pins)
    assert lab.tcp_connect(25, frm="server") == "open"
    assert lab.tcp_connect(8080) == "open"


def test_explain_shows_connection_state(lab, tmp_path):
    apply(lab, write(tmp_path, HOST))
    common = ["explain", "--netns", lab.server_ns, "-i", lab.server_if, "--proto", "tcp",
              "--src", "10.200.0.2", "--dst", "10.200.0.1", "--dport", "8080", "--json"]
    for flags, state in (("syn", "new"), ("ack", "invalid")):
        res = bpfwall(*common, "--flags", flags)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert (out["verdict"], out["decided_by"], out["ct_state"], out["agree"]) == ("drop", "policy", state, True)
    # explain neither counts nor tracks
    assert not [f for f in conntrack(lab)["flows"] if f["dport"] == 8080]


EGRESS_REJECT = """
version: 1
policy: {ingress: accept, egress: accept}
rules:
  - {name: no-smtp-out, direction: egress, proto: tcp, dport: 25, action: reject}
  - {name: no-dns-out, direction: egress, proto: udp, dport: 53, action: reject}
"""


def test_egress_reject_refuses_local_processes_at_once(lab, tmp_path):
    """A local process is refused at once, as by nftables' output reject: connect() gets
    ECONNREFUSED from a RST, a connected UDP socket from an ICMP port unreachable; both
    are handed to the local stack and nothing leaves the host. The client side listens on
    both ports, so a refusal can only be bpfwall's."""
    apply(lab, write(tmp_path, EGRESS_REJECT))
    for v6 in (False, True):
        t0 = time.monotonic()
        assert lab.tcp_connect(25, v6, frm="server", timeout=3.0) == "refused"
        assert lab.udp_query(53, v6, frm="server", timeout=3.0) == "refused"
        assert time.monotonic() - t0 < 2.0  # at once: no retransmission timed out
        assert lab.tcp_connect(80, v6, frm="server") == "open"
    s = stats(lab)
    rules = {(r["name"], r["direction"]): r["packets"] for r in s["rules"]}
    assert rules[("no-smtp-out", "egress")] == 2 and rules[("no-dns-out", "egress")] == 2
    assert s["rejects_sent"] == 4
