"""Verdicts at connect() and sendmsg(): the cgroup hooks against the model.

The hooks cannot be test-run (BPF_PROG_TEST_RUN has no cgroup sock_addr support), so each
example links a generation's connect and sendmsg programs to a cgroup tree this test makes,
and a child process in one of its cgroups, under one of several uids, inside a lab
namespace, makes real calls: a non-blocking TCP connect(), a UDP connect() and an
unconnected UDP sendto(), to addresses of 10.200.0.0/16 and fd42:200::/64 only. EPERM is a
drop, ECONNREFUSED a reject, anything else (the call went on) "go"; reference.decide_connect
says what it should be, and the rule's counter which rule refused.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import traceback
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bpfwall import libbpf, netns, owners, reference
from bpfwall.compiler import compile_ruleset, judges_connections
from bpfwall.dispatcher import HOOKS
from bpfwall.lab import CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Lab
from bpfwall.ruleset import Ruleset
from tests.dataplane.cgroups import NAMED, TREE, UIDS, CgroupTree
from tests.dataplane.stateful import Pair
from tests.profile import examples
from tests.strategies import owner_rulesets

# Destinations: the lab's peer, the namespace's own address (over loopback: never judged),
# loopback, IPv4-mapped IPv6, and addresses of the test ranges with no route (the call fails
# after the hooks, so nothing leaves).
DESTINATIONS = [CLIENT_V4, "10.200.1.5", "10.200.1.200", "10.200.2.1", SERVER_V4, "127.0.0.1",
                CLIENT_V6, "fd42:200::5", "fd42:200::1:0:0:7", SERVER_V6, "::1", f"::ffff:{CLIENT_V4}"]
PORTS = [53, 80, 443, 8080]
CALLS = ["tcp-connect", "udp-connect", "udp-sendto"]


@pytest.fixture(scope="module")
def lab():
    with Lab("conn", peer="none") as made:
        yield made


def outcome(call: str, dst: str, port: int) -> str:
    """Makes the call; "drop" (EPERM), "reject" (ECONNREFUSED) or "go"."""
    v6 = ":" in dst
    kind = socket.SOCK_STREAM if call.startswith("tcp") else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind) as s:
        s.setblocking(False)
        try:
            if call == "udp-sendto":
                s.sendto(b"x", (dst, port))
            else:
                s.connect((dst, port))
        except BlockingIOError:
            return "go"  # a TCP connect under way: the hooks let it go
        except OSError as exc:
            return {errno.EPERM: "drop", errno.ECONNREFUSED: "reject"}.get(exc.errno, "go")
    return "go"


def calls_in_child(mount: str, cgroup: str, uid: int, ns: str, attempts: list) -> list[str]:
    """The outcomes of attempts made by a child process in cgroup, as uid, inside ns."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(rd)
            with open(os.path.join(mount, cgroup, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))
            with netns.enter(ns):  # for good: once uid, the child cannot come back
                os.setresuid(uid, uid, uid)
                os.write(wr, json.dumps([outcome(*a) for a in attempts]).encode())
                os._exit(0)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(wr)
    with os.fdopen(rd) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    return json.loads(data)


def linked(tree: CgroupTree, gen) -> list[int]:
    """The generation's hook programs linked to the test's cgroup tree."""
    fd = os.open(os.path.join(tree.mount, TREE[0]), os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [libbpf.link_create(gen.hook_fds[hook], fd, attach) for hook, attach in HOOKS.items()]
    finally:
        os.close(fd)


@st.composite
def connect_rulesets(draw) -> Ruleset:
    """Owner rule sets where about half the rules ask nothing a call does not know, so that
    calls meet rules that decide at the call as well as ones left to the packets."""
    ruleset = draw(owner_rulesets(NAMED, UIDS))
    rules = []
    for r in ruleset.rules:
        if r.action != "ban" and draw(st.booleans()):
            r = replace(r, interfaces=None, src=None, src_sets=(), sport=None, tcp_flags=None, limit=None,
                        log=None)
            if draw(st.booleans()):  # and more often one that meets TCP and UDP calls
                r = replace(r, protos=None, dport=None, icmp=None, ct=None)
        rules.append(r)
    ruleset.rules = rules
    return ruleset


ATTEMPTS = st.lists(st.tuples(st.sampled_from(CALLS), st.sampled_from(DESTINATIONS), st.sampled_from(PORTS)),
                    min_size=4, max_size=12)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(connect_rulesets(), st.sampled_from(TREE[1:]), st.sampled_from(UIDS + [4242]), ATTEMPTS)
def test_calls_are_judged_as_the_model_says(tree: CgroupTree, lab: Lab, ruleset: Ruleset, cgroup: str,
                                            uid: int, attempts: list):
    assume(judges_connections(compile_ruleset(ruleset, "egress").config))
    with Pair(ruleset) as pair:
        gen = pair.gens["egress"]
        local = [SERVER_V4, SERVER_V6]
        gen.judge_connections_in(netns.cookie(lab.server_ns),
                                 [ipaddress.ip_address(f"::ffff:{a}" if "." in a else a).packed for a in local])
        links = linked(tree, gen)
        try:
            before = gen.counters(blocks=1)
            got = calls_in_child(tree.mount, cgroup, uid, lab.server_ns, attempts)
            after = gen.counters(blocks=1)
        finally:
            for fd in links:
                os.close(fd)
    owner = owners.Owner(cgroup, uid)
    local_set = frozenset(ipaddress.ip_address(a) for a in local)
    refused = {}
    for (call, dst, port), outcome_got in zip(attempts, got, strict=True):
        proto = 6 if call.startswith("tcp") else 17
        want, rule = reference.decide_connect(pair.ruleset, proto, ipaddress.ip_address(dst), port, owner, local_set)
        assert outcome_got == want, (call, dst, port, rule)
        if want != "go":
            refused[rule] = refused.get(rule, 0) + 1
    n = len(ruleset.direction("egress"))
    counted = {i: after[i][0] - before[i][0] for i in range(n) if after[i][0] != before[i][0]}
    assert counted == {r: k for r, k in refused.items() if r is not None}


def test_a_refusal_at_connect_needs_nothing_only_a_packet_shows(tree: CgroupTree, lab: Lab):
    """A rule that asks for the source port is left to the egress program, even when the
    destination and owner match; a rule after it that needs nothing more is not reached."""
    from bpfwall import config

    ruleset = config.loads(f"""
version: 1
rules:
  - {{name: by-sport, direction: egress, proto: tcp, sport: 1-1023, dst: 10.200.1.5, user: 0, action: drop}}
  - {{name: mine, direction: egress, proto: tcp, dst: 10.200.1.5, cgroup: {TREE[1]}, action: reject}}
  - {{name: others, direction: egress, proto: [tcp, udp], dst: 10.200.1.0/24, action: drop}}
""")
    with Pair(ruleset) as pair:
        gen = pair.gens["egress"]
        gen.judge_connections_in(netns.cookie(lab.server_ns), [])
        links = linked(tree, gen)
        try:
            got = calls_in_child(tree.mount, TREE[2], 0, lab.server_ns,
                                 [("tcp-connect", "10.200.1.5", 80), ("udp-sendto", "10.200.1.5", 80),
                                  ("tcp-connect", "10.200.1.6", 80)])
            other = calls_in_child(tree.mount, TREE[3], 1000, lab.server_ns, [("tcp-connect", "10.200.1.5", 80)])
        finally:
            for fd in links:
                os.close(fd)
    assert got == ["go", "drop", "drop"]
    assert other == ["drop"]  # by-sport asks uid 0; mine the cgroup: others decides
