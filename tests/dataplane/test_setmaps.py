"""The two copies of a set: a change flips between them, and the next change levels them,
also after a change killed before or after its flip."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfwall import libbpf, setmaps
from bpfwall.cidrset import CidrSet, parse_element
from bpfwall.config import loads
from bpfwall.setmaps import Fix, SetTables
from tests.dataplane.conftest import loaded
from tests.profile import examples

RULES = """\
version: 1
sets:
  s: {type: cidr, elements: [10.1.0.0/16, "fd42:200::/64"]}
rules:
  - {name: r, src: "@s", action: drop}
"""


def el(text: str):
    return parse_element(text)[0]


def copies(tables: SetTables, slot: int) -> tuple[set, set]:
    """(current, spare) contents."""
    current = tables.version(slot)
    out = []
    for version in (current, 1 - current):
        saved = tables.version
        tables.version = lambda _slot, v=version: v  # read the copy of that version
        try:
            out.append(set(tables.elements(slot)))
        finally:
            tables.version = saved
    return out[0], out[1]


@pytest.fixture
def tables():
    with loaded(loads(RULES, "t.yaml")) as gen, SetTables(None, gen.set_fds()) as t:
        yield t


def test_change_flips_and_the_next_change_levels(tables):
    fixes: list[Fix] = []
    tables.change(0, [el("10.2.0.1")], [el("10.1.0.0/16")], fixes.append)
    current, spare = copies(tables, 0)
    assert current == {el("10.2.0.1"), el("fd42:200::/64")}
    assert spare == {el("10.1.0.0/16"), el("fd42:200::/64")}  # a packet still in it sees the old set
    tables.level(0, fixes[-1])
    assert copies(tables, 0) == (current, current)


def test_a_change_killed_before_its_flip_is_undone_by_the_next(tables, monkeypatch):
    fixes: list[Fix] = []
    before = copies(tables, 0)[0]
    real = libbpf.map_update

    def killed(fd, key, value, flags=0):
        if fd == tables.fds["set_version"]:
            raise KeyboardInterrupt  # the process dies just before the flip
        return real(fd, key, value, flags)

    monkeypatch.setattr(libbpf, "map_update", killed)
    with pytest.raises(KeyboardInterrupt):
        tables.change(0, [el("10.3.0.0/24")], [el("fd42:200::/64")], fixes.append)
    monkeypatch.setattr(libbpf, "map_update", real)
    assert copies(tables, 0)[0] == before  # nothing reached the packets
    tables.level(0, fixes[-1])
    assert copies(tables, 0) == (before, before)


def test_fix_round_trips_through_json():
    fix = Fix(1, ([el("10.0.0.1")], [el("fd42::/16")]), ([el("fd42::/16")], [el("10.0.0.1")]))
    assert Fix.from_json(fix.to_json()) == fix
    assert Fix.from_json(None) is None


def test_fill_makes_both_copies_equal(tables):
    current, spare = copies(tables, 0)
    assert current == spare == set(CidrSet("s", {el("10.1.0.0/16"), el("fd42:200::/64")}).elements)
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
    current, spare = copies(tables, 0)
    for key_slot in (0, 1):  # empty both copies: the fixture (or the last example) filled them
        setmaps._delete(tables.fds, key_slot, current | spare)
    setmaps.fill(tables.fds, {"s": CidrSet("s", elements)}, {"s": 0})
    assert copies(tables, 0) == (elements, elements)

