"""Answers from XDP (rejects, SYN cookies) on a veth whose other end runs no XDP program.

A veth passes frames sent from XDP to its other end only while that end polls for them:
when it runs XDP or has GRO on. The labs here run nothing on the client end: with GRO on
the answers must arrive; with GRO off apply and status say why they cannot, and stats
counts what the interface failed to deliver apart from what was handed to it.
"""

from __future__ import annotations

import json

import pytest

from bpfwall import scope as scope_mod
from bpfwall.lab import Lab
from tests.e2e.conftest import apply, bpfwall, stats, write

REJECT = """
version: 1
policy: {ingress: accept}
rules:
  - {name: closed, proto: [tcp, udp], dport: [25, 9999], action: reject}
"""


@pytest.fixture(params=["gro", "none"])
def bare_lab(request):
    scope_mod.ensure_bpffs()
    with Lab("ans", peer=request.param) as lab:
        for v6 in (False, True):
            lab.tcp_server(80, v6=v6)
        yield lab


def test_rejects_reach_a_peer_without_xdp(bare_lab, tmp_path):
    lab = bare_lab
    res = apply(lab, write(tmp_path, REJECT))
    if lab.peer == "gro":
        assert "cannot reach" not in res.stderr, res.stderr
        # refused at once, by RST or ICMP port unreachable, both families
        assert [lab.tcp_connect(25, v6=v6) for v6 in (False, True)] == ["refused", "refused"]
        assert [lab.udp_query(9999, v6=v6) for v6 in (False, True)] == ["refused", "refused"]
        assert lab.tcp_connect(80) == "open"
        s = stats(lab)
        assert s["rejects_sent"] == 4 and s["answers_undelivered"] == 0, s
        return
    # GRO off and no XDP on the other end: nothing sent from XDP can arrive, and bpfwall says so
    assert "cannot reach the other end of this veth" in res.stderr, res.stderr
    assert "gro on" in res.stderr and "--mode generic" in res.stderr
    st = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert "cannot reach" in st["interfaces"][0]["answers"]
    assert lab.tcp_connect(25, timeout=0.5) == "timeout"
    assert lab.udp_query(9999, timeout=0.5) == "timeout"
    s = stats(lab)
    # handed to the interface, and counted again as what it failed to deliver
    assert s["rejects_sent"] == 2 and s["answers_undelivered"] == 2, s
    text = " ".join(bpfwall("stats", "--netns", lab.server_ns).stdout.split())  # the caption wraps
    assert "2 answers the interface could not deliver" in text
    # generic mode answers through the stack: the advice works
    assert bpfwall("down", "--netns", lab.server_ns).returncode == 0
    res = apply(lab, write(tmp_path, REJECT), "--mode", "generic")
    assert "cannot reach" not in res.stderr
    assert lab.tcp_connect(25) == "refused" and lab.udp_query(9999, v6=True) == "refused"


def test_no_warning_without_answers(tmp_path):
    """A rule set that never answers from XDP has nothing to say about the peer."""
    scope_mod.ensure_bpffs()
    with Lab("ans", peer="none") as lab:
        res = apply(lab, write(tmp_path, "version: 1\npolicy: {ingress: accept}\nrules:\n"
                                         "  - {name: closed, proto: tcp, dport: 25, action: drop}\n"))
        assert "cannot reach" not in res.stderr
