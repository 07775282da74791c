"""Egress rules by owner: the sending socket's cgroup and uid, the kernel against the model.

A test run of bpfwall_egress gets a socket of the kernel's own in the caller's cgroup, so
these tests make a cgroup tree of their own and move this process through it; the uid (and
a packet without any socket) is named through the test run's cb[] (shared.skb_run_ctx).
"""

from __future__ import annotations

import errno

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfwall import owners
from bpfwall.libbpf import BpfError
from bpfwall.ruleset import Ruleset
from tests.dataplane.cgroups import BASE, NAMED, TREE, UIDS, CgroupTree
from tests.dataplane.stateful import Pair
from tests.profile import examples
from tests.strategies import frames, owner_rulesets

OWNERS = st.one_of(st.none(), st.builds(owners.Owner, st.sampled_from(TREE), st.sampled_from(UIDS + [4242])))


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(owner_rulesets(NAMED, UIDS), st.lists(st.tuples(frames(), OWNERS), min_size=6, max_size=16))
def test_owner_rules_agree_with_reference(tree: CgroupTree, ruleset: Ruleset, steps: list):
    with Pair(ruleset) as pair:
        for frame, owner in steps:
            if len(frame) < 14:
                continue
            if owner is not None:
                tree.enter(owner.cgroup)
            try:
                got, want = pair.send("egress", frame, owner)
            except BpfError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                continue  # too short for the kernel to make an skb of: nothing to judge
            finally:
                tree.enter(tree.home)
            assert got == want, (frame.hex(), owner)


def test_a_socket_below_two_named_cgroups_takes_the_rules_of_both(tree: CgroupTree):
    """A rule naming a matches a/b too; one naming a/b does not match a."""
    from bpfwall import config

    ruleset = config.loads(f"""
version: 1
rules:
  - {{name: inner, direction: egress, proto: udp, cgroup: {BASE}/a/b, action: drop}}
  - {{name: outer, direction: egress, proto: tcp, cgroup: {BASE}/a, user: 1000, action: reject}}
""")
    from scapy.all import IP, TCP, UDP, Ether

    tcp = bytes(Ether() / IP(src="10.200.0.1", dst="10.200.0.2") / TCP(dport=80, flags="S"))
    udp = bytes(Ether() / IP(src="10.200.0.1", dst="10.200.0.2") / UDP(dport=53))
    with Pair(ruleset) as pair:
        cases = [(f"{BASE}/a/b", 1000, tcp, 1), (f"{BASE}/a/b", 0, udp, 0), (f"{BASE}/a", 1000, udp, None),
                 (f"{BASE}/a", 1000, tcp, 1), (f"{BASE}/a", 0, tcp, None), (f"{BASE}/c", 1000, tcp, None)]
        for cgroup, uid, frame, rule in cases:
            tree.enter(cgroup)
            try:
                got, want = pair.send("egress", frame, owners.Owner(cgroup, uid))
            finally:
                tree.enter(tree.home)
            assert got == want
            assert got[1] == rule, (cgroup, uid)
