"""The property test at scale: thousands of rules, sets of tens of thousands of nested prefixes.

Small rule sets find logic errors; large ones find what only scale brings:
many summary words, thousands of classes, deep tries, sets whose prefixes
nest and overlap each other and the rules' own prefixes.
"""

from __future__ import annotations

import ipaddress
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6

from bpfwall import reference, shared
from bpfwall.cidrset import CidrSet
from bpfwall.ruleset import Rule, Ruleset
from tests.dataplane.conftest import loaded
from tests.profile import examples

KINDS = shared.DECISIONS
ROOTS = {4: (0x0A000000, 8, 32), 6: (0x20010DB8 << 96, 32, 128)}  # 10.0.0.0/8, 2001:db8::/32


def nested_prefixes(rnd: random.Random, family: int, count: int) -> set[tuple[int, int, int]]:
    """count prefixes under the family's root that nest: children are drawn inside earlier ones."""
    base, root_len, bits = ROOTS[family]
    out: list[tuple[int, int, int]] = [(family, base, root_len)]
    while len(out) < count:
        _, parent, plen = rnd.choice(out[-200:] if rnd.random() < 0.7 else out)
        longest = bits if family == 4 else 64
        if plen >= longest:
            continue
        child_len = rnd.randint(plen + 1, min(longest, plen + 8))
        host = rnd.getrandbits(child_len - plen) << (bits - child_len)
        out.append((family, parent | host, child_len))
    return set(out[1:])


def to_net(e: tuple[int, int, int]) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    family, net, plen = e
    return ipaddress.ip_network((net, plen)) if family == 4 else ipaddress.IPv6Network((net, plen))


def large_ruleset(rnd: random.Random, n_rules: int, set_size: int) -> Ruleset:
    sets = {}
    for name in ("big0", "big1", "big2"):
        elements = nested_prefixes(rnd, 4, set_size * 3 // 4) | nested_prefixes(rnd, 6, set_size // 4)
        sets[name] = CidrSet(name, elements)
    pool = [to_net(e) for e in nested_prefixes(rnd, 4, 600) | nested_prefixes(rnd, 6, 200)]
    # Rule prefixes that are also set elements: literals and sets overlap exactly.
    pool += [to_net(e) for e in rnd.sample(sorted(sets["big0"].elements), 100)]
    rules = []
    for i in range(n_rules):
        kw: dict = {"name": f"r{i}", "action": rnd.choice(["accept", "drop", "reject"])}
        protos = rnd.choice([None, {6}, {17}, {6, 17}])
        if protos:
            kw["protos"] = frozenset(protos)
            if rnd.random() < 0.6:
                lo = rnd.choice([0, 22, 53, 80, 443, 1000, 8000, 30000])
                kw["dport"] = ((lo, lo + rnd.choice([0, 0, 10, 1000])),)
        for key in ("src", "dst"):
            roll = rnd.random()
            if roll < 0.45:
                kw[key] = tuple(rnd.sample(pool, rnd.randint(1, 3)))
            elif roll < 0.6:
                kw[key] = tuple(rnd.sample(pool, rnd.randint(0, 1)))
                kw[f"{key}_sets"] = tuple(sorted(rnd.sample(sorted(sets), rnd.randint(1, 2))))
        rules.append(Rule(**kw))
    if rnd.random() < 0.4:  # a blocklist first: its set is searched before the rest
        rules.insert(0, Rule(name="blocklist", src_sets=("big1",), action="drop"))
    return Ruleset(rules=rules, policy={"ingress": rnd.choice(["accept", "drop"]), "egress": "accept"},
                   sets={n: {"type": "cidr", "size": len(sets[n]), "slot": i} for i, n in enumerate(sorted(sets))},
                   cidr_sets=sets)


def address(rnd: random.Random, ruleset: Ruleset, family: int) -> str:
    """An address inside a set element, inside a rule prefix, or anywhere under the root."""
    bits = 32 if family == 4 else 128
    roll = rnd.random()
    if roll < 0.5:
        name = rnd.choice(sorted(ruleset.cidr_sets))
        elements = [e for e in ruleset.cidr_sets[name].elements if e[0] == family]
        _, net, plen = rnd.choice(elements)
    elif roll < 0.8:
        nets = [n for r in ruleset.rules for n in (r.src or ()) + (r.dst or ()) if n.version == family]
        n = rnd.choice(nets)
        net, plen = int(n.network_address), n.prefixlen
    else:
        net, plen = ROOTS[family][0], ROOTS[family][1]
    value = net | rnd.getrandbits(bits - plen)
    return str(ipaddress.ip_address(value) if family == 4 else ipaddress.IPv6Address(value))


def frame(rnd: random.Random, ruleset: Ruleset) -> bytes:
    family = 4 if rnd.random() < 0.7 else 6
    src, dst = address(rnd, ruleset, family), address(rnd, ruleset, family)
    l3 = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    sport, dport = rnd.choice([1234, 40000, 53]), rnd.choice([22, 53, 80, 443, 1005, 8000, 30500, 9])
    l4 = rnd.choice([TCP(sport=sport, dport=dport, flags="S"), UDP(sport=sport, dport=dport),
                     ICMP() if family == 4 else UDP(sport=sport, dport=dport)])
    return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / l3 / l4)


@settings(max_examples=examples(6), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**32 - 1))
def test_large_rule_sets_agree_with_reference(seed: int):
    """A seed, not hypothesis' own data: tens of thousands of draws would overflow its buffer."""
    rnd = random.Random(seed)
    ruleset = large_ruleset(rnd, n_rules=3000, set_size=20000)
    with loaded(ruleset) as gen:
        decided_by_rule = 0
        for _ in range(300):
            f = frame(rnd, ruleset)
            verdict, why, _ = gen.judge(f, 0)
            want = reference.decide(ruleset, f, "lo", learn=False)
            got_rule = why.rule if why.rule != shared.NO_RULE else None
            assert (KINDS[why.decision], got_rule, verdict) == (want.kind, want.rule, want.verdict), f.hex()
            decided_by_rule += want.kind == "rule"
        assert decided_by_rule > 60, "the frames should mostly hit rules, deep in the list too"
