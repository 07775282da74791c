"""The two copies of a set: a change flips between them, and the next change levels them,
also after a change killed before or after its flip."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, UDP, Ether, IPv6

from bpfwall import libbpf, setmaps
from bpfwall.cidrset import CidrSet, parse_element
from bpfwall.config import loads
from bpfwall.generation import empty
from bpfwall.setmaps import Fix, SetTables
from tests.dataplane.conftest import loaded
from tests.profile import examples

RULES = """\
version: 1
sets:
  s: {type: cidr, elements: [10.1.0.0/16, 10.1.0.9, "fd42:200::/64"]}
rules:
  - {name: r, src: "@s", action: drop}
"""


def el(text: str):
    return parse_element(text)[0]


def udp_from(src: str) -> bytes:
    """A UDP frame from src (the addresses given: scapy resolves no neighbour)."""
    ip = IPv6(src=src, dst="fd42:200::1") if ":" in src else IP(src=src, dst="10.200.0.1")
    return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / ip / UDP(dport=53))


def at(tables: SetTables, slot: int, offset: int = 0) -> set:
    """The set's elements at the version in force plus offset: -1 is what a packet that
    read the version before the last change sees; +1 what the next change starts from."""
    return set(tables.elements(slot, (tables.version(slot) + offset) & setmaps.VERSION_MASK))


@pytest.fixture
def tables():
    with loaded(loads(RULES, "t.yaml")) as gen, SetTables(None, gen.set_fds()) as t:
        yield t


def test_change_flips_and_the_next_change_levels(tables):
    fixes: list[Fix] = []
    tables.change(0, [el("10.2.0.1")], [el("10.1.0.0/16"), el("10.1.0.9")], fixes.append)
    current = at(tables, 0)
    assert current == {el("10.2.0.1"), el("fd42:200::/64")}
    # a packet that read the version before sees the old set
    assert at(tables, 0, -1) == {el("10.1.0.0/16"), el("10.1.0.9"), el("fd42:200::/64")}
    tables.level(0, fixes[-1])
    assert at(tables, 0) == at(tables, 0, +1) == current
    assert tables.span(0, el("10.1.0.9")) is None, "an address that left the set is deleted"


def test_a_change_killed_before_its_flip_is_undone_by_the_next(tables, monkeypatch):
    fixes: list[Fix] = []
    before = at(tables, 0)
    real = libbpf.map_update

    def killed(fd, key, value, flags=0):
        if fd == tables.fds["set_version"] and value.version != tables.version(0):
            raise KeyboardInterrupt  # the process dies just before the flip
        return real(fd, key, value, flags)

    monkeypatch.setattr(libbpf, "map_update", killed)
    with pytest.raises(KeyboardInterrupt):
        tables.change(0, [el("10.3.0.0/24"), el("10.3.1.1")], [el("fd42:200::/64"), el("10.1.0.9")],
                      fixes.append)
    monkeypatch.setattr(libbpf, "map_update", real)
    assert at(tables, 0) == before  # nothing reached the packets
    tables.level(0, fixes[-1])
    assert at(tables, 0) == at(tables, 0, +1) == before
    assert tables.span(0, el("10.3.1.1")) is None, "an address added for a version that never came is gone"


def test_fix_round_trips_through_json():
    fix = Fix(1, ([el("10.0.0.1")], [el("fd42::/16")]), ([el("fd42::/16")], [el("10.0.0.1")]))
    assert Fix.from_json(fix.to_json()) == fix
    assert Fix.from_json(None) is None


def test_fill_makes_both_copies_equal(tables):
    assert at(tables, 0) == at(tables, 0, +1) == {el("10.1.0.0/16"), el("10.1.0.9"), el("fd42:200::/64")}
    assert setmaps.TRIES == {4: "set4", 6: "set6"}


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([4, 6]), st.integers(0, (1 << 128) - 1), st.integers(0, 128)),
                max_size=300))
def test_fill_writes_every_element_in_both_copies(tables, raw):
    """fill() builds the keys a column at a time, sorted by address: both copies must hold
    exactly the set, whatever its families, prefix lengths and order."""
    elements = set()
    for family, value, plen in raw:
        bits = 32 if family == 4 else 128
        plen = plen % (bits + 1)
        net = (value >> (128 - bits)) >> (bits - plen) << (bits - plen)
        elements.add((family, net, plen))
    for name in (*setmaps.TRIES.values(), *setmaps.HOSTS.values()):  # the fixture (or the last example) filled them
        empty(tables.fds[name])
    setmaps.fill(tables.fds, {"s": CidrSet("s", elements)}, {"s": 0})
    assert at(tables, 0) == at(tables, 0, +1) == elements


def test_addresses_beyond_the_hash_go_into_the_trie_and_still_match():
    """The host tables are sized at load for the sets' addresses (one here, so a little
    room): a change that brings more puts the rest in the trie, and packets, contains()
    and the listing find every one wherever it went, and lose it again."""
    from bpfwall import shared

    many = [el(f"10.3.{i // 256}.{i % 256}") for i in range(300)] + [el(f"fd42:200:0:1::3:{i:x}") for i in range(300)]
    base = {el("10.1.0.0/16"), el("10.1.0.9"), el("fd42:200::/64")}
    with loaded(loads(RULES, "t.yaml")) as gen, SetTables(None, gen.set_fds()) as tables:
        assert libbpf.map_info(tables.fds["host4"]).max_entries < 300, "the test needs more than fits"
        fixes: list[Fix] = []
        tables.change(0, many, [], fixes.append)
        tables.level(0, fixes[-1])
        assert at(tables, 0) == at(tables, 0, +1) == set(many) | base
        assert all(tables.contains(0, e) for e in many)

        def verdict(src: str) -> int:
            return gen.test_run(udp_from(src))[0]

        assert verdict("10.3.1.43") == verdict("10.3.0.0") == verdict("fd42:200:0:1::3:12b") == shared.XDP_DROP
        assert verdict("10.4.0.1") == shared.XDP_PASS
        tables.change(0, [], many, fixes.append)
        tables.level(0, fixes[-1])
        assert at(tables, 0) == at(tables, 0, +1) == base
        assert verdict("10.3.1.43") == verdict("fd42:200:0:1::3:12b") == shared.XDP_PASS



# A small space, so that host entries collide, chains run into the probe limit, killed
# entries are taken over and networks nest: 10.7.0.0/22 and fd42:200:7::/120.
def _small_elements():
    v4 = st.builds(lambda a, p: (4, (0x0A070000 | a) >> (32 - p) << (32 - p), p),
                   st.integers(0, 1023), st.sampled_from([32, 32, 32, 32, 30, 26, 24, 22]))
    v6 = st.builds(lambda a, p: (6, (0xFD42_0200_0007 << 80 | a) >> (128 - p) << (128 - p), p),
                   st.integers(0, 255), st.sampled_from([128, 128, 128, 124, 120]))
    return st.one_of(v4, v6)


def _probe(element) -> str:
    return str(ipaddress.ip_address(element[1]))


LIVE_RULES = """\
version: 1
sets:
  s: {type: cidr, elements: [10.7.0.1]}
rules:
  - {name: r, src: "@s", action: drop}
"""


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_small_elements(), min_size=1, max_size=60), min_size=1, max_size=8),
       st.lists(_small_elements(), min_size=4, max_size=12))
def test_live_changes_agree_with_reference(batches, probes):
    """Each batch toggles its elements (in the set: removed; not: added) in one change. After
    each, every probe address and every element's own address gets the kernel's verdict and
    reference.decide()'s on the set as it now is; the listing at the version in force and
    at the one before are the set now and the set before."""
    import dataclasses

    from bpfwall import reference

    ruleset = loads(LIVE_RULES, "t.yaml")
    model = set(ruleset.cidr_sets["s"].elements)
    with loaded(ruleset) as gen, SetTables(None, gen.set_fds()) as tables:
        fix = None
        for batch in batches:
            toggled = set(batch)
            add, remove = sorted(toggled - model), sorted(toggled & model)
            tables.level(0, fix)
            fixes: list[Fix] = []
            before = set(model)
            tables.change(0, add, remove, fixes.append)
            fix = fixes[-1]
            model = (model | set(add)) - set(remove)
            assert at(tables, 0) == model
            assert at(tables, 0, -1) == before
            now = dataclasses.replace(ruleset, cidr_sets={"s": CidrSet("s", set(model))})
            for e in {*probes, *toggled}:
                src = _probe(e)
                frame = udp_from(src)
                want = reference.decide(now, frame, "lo", ct=reference.Conntrack(), learn=False)
                assert gen.judge(frame, 0)[0] == want.verdict, (src, want.reason)
                assert tables.contains(0, e) == (e in model), e
