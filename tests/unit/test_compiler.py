"""The compiled tables, read as the data plane reads them, agree with the reference model.

Pure Python (no kernel): a bug in classes, intervals, tries or bitvectors shows
here before it reaches BPF_PROG_TEST_RUN.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwall import owners, reference, shared
from bpfwall.compiler import Compiled, compile_ruleset, ipv4_class
from bpfwall.ruleset import Rule, Ruleset
from tests.profile import examples
from tests.strategies import frames, owner_rulesets, rulesets


def lookup_trie(entries, addr) -> int:
    best = max((net for net, _ in entries if addr in net), key=lambda n: n.prefixlen)
    return dict(entries)[best]


def address_class(c: Compiled, field: int, addr) -> int:
    """IPv4 through the DIR tables, IPv6 through the trie, as bitvector_of_addr() does."""
    if addr.version == 4:
        return ipv4_class(c, field, int(addr))
    return lookup_trie(c.tries[("src6", "dst6")[field]], addr)


def owner_classes(c: Compiled, owner: owners.Owner | None) -> list[int]:
    """note_owner() of bpf/owner.h: the class of the deepest named cgroup at or above the
    socket's, and of its uid; the default classes for a packet without a socket."""
    out = []
    if shared.F_CGROUP in c.fields_used:
        named = [p for p in c.cgroup_classes if owner is not None and owners.cgroup_covers(p, owner.cgroup)]
        deepest = max(named, key=owners.cgroup_level, default=None)
        out.append(c.cgroup_classes[deepest] if deepest else c.config.cgroup_default_class)
    if shared.F_USER in c.fields_used:
        uid_class = c.user_classes.get(owner.uid) if owner is not None else None
        out.append(c.config.user_default_class if uid_class is None else uid_class)
    return out


def simulate(c: Compiled, pkt: reference.Packet, ifname: str, ct_state: int,
             ruleset: Ruleset, owner: owners.Owner | None = None) -> int | None:
    """classify() of bpf/classify.h, in Python, over the compiled tables (and the
    set tries' contents, taken from ruleset.cidr_sets); owner: the egress packet's socket."""
    by_slot = {slot: ruleset.cidr_sets[name] for name, slot in ruleset.set_slots().items()}

    def with_sets(cid: int, refs, addr) -> int:
        bits = c.bitvectors[cid]
        for ref in refs:
            if by_slot[ref.slot].contains(pkt.family, addr.packed):
                bits |= c.bitvectors[ref.cls]
        return bits

    vectors = []
    if shared.F_IFACE in c.fields_used:
        vectors.append(c.iface_classes.get(ifname, c.config.iface_default_class))
    if shared.F_PROTO in c.fields_used:
        vectors.append(c.class_of[shared.PROTO_BASE + pkt.is_ipv6 * 256 + pkt.proto])
    if shared.F_SRC in c.fields_used:
        vectors.append(("bits", with_sets(address_class(c, 0, pkt.saddr),
                                          c.config.src_sets[: c.config.n_src_sets], pkt.saddr)))
    if shared.F_DST in c.fields_used:
        vectors.append(("bits", with_sets(address_class(c, 1, pkt.daddr),
                                          c.config.dst_sets[: c.config.n_dst_sets], pkt.daddr)))
    ports = pkt.has_l4 and pkt.proto in (6, 17, 132)
    if shared.F_SPORT in c.fields_used:
        vectors.append(c.class_of[shared.SPORT_BASE + (pkt.sport if ports else shared.PORT_ABSENT)])
    if shared.F_DPORT in c.fields_used:
        vectors.append(c.class_of[shared.DPORT_BASE + (pkt.dport if ports else shared.PORT_ABSENT)])
    if shared.F_TCPFLAGS in c.fields_used:
        tcp = pkt.has_l4 and pkt.proto == 6
        vectors.append(c.class_of[shared.TCPFLAGS_BASE + (pkt.tcp_flags if tcp else shared.TCPFLAGS_ABSENT)])
    if shared.F_ICMP in c.fields_used:
        slot = shared.ICMP_ABSENT
        if pkt.has_l4 and pkt.is_icmp:
            slot = pkt.is_ipv6 << 16 | pkt.icmp_type << 8 | pkt.icmp_code
        vectors.append(c.class_of[shared.ICMP_BASE + slot])
    if shared.F_CT in c.fields_used:
        vectors.append(c.class_of[shared.CT_BASE + ct_state])
    vectors += owner_classes(c, owner)
    acc = -1
    for cid in vectors:
        acc &= cid[1] if isinstance(cid, tuple) else c.bitvectors[cid]
    assert vectors, "at least one field is always in use"
    if acc == 0:
        return None
    return (acc & -acc).bit_length() - 1


@settings(max_examples=examples(400), deadline=None)
@given(rulesets(), frames())
def test_compiled_tables_agree_with_reference(ruleset: Ruleset, frame: bytes):
    c = compile_ruleset(ruleset)
    try:
        pkt = reference.parse(frame)
    except (reference.Malformed, reference.NotIp):
        return
    want = reference.decide(ruleset, frame, "lo", ct=reference.Conntrack(), learn=False)
    got = simulate(c, pkt, "lo", want.ct_state or 0, ruleset)
    assert got == want.rule, (got, want)


CGROUPS = ["svc", "svc/backup.service", "svc/backup.service/job", "web.slice"]
OWNERS = st.one_of(st.none(), st.builds(owners.Owner, st.sampled_from(["", "other", *CGROUPS, "svc/x"]),
                                        st.sampled_from([0, 1000, 1001, 4242])))


@settings(max_examples=examples(300), deadline=None)
@given(owner_rulesets(CGROUPS, [0, 1000, 1001]), frames(), OWNERS)
def test_owner_classes_agree_with_reference(ruleset: Ruleset, frame: bytes, owner: owners.Owner | None):
    """The egress rules by cgroup and user, through the compiled owner classes: a rule naming a
    cgroup matches it and those below, and a packet without a socket only owner-less rules."""
    c = compile_ruleset(ruleset, "egress")
    try:
        pkt = reference.parse(frame)
    except (reference.Malformed, reference.NotIp):
        return
    want = reference.decide(ruleset, frame, "lo", "egress", ct=reference.Conntrack(), learn=False, owner=owner)
    assert simulate(c, pkt, "lo", want.ct_state or 0, ruleset, owner) == want.rule


def test_owner_levels_are_those_the_rules_name():
    rules = [Rule(name="a", action="accept", direction="egress", cgroup="svc/backup.service"),
             Rule(name="b", action="accept", direction="egress", cgroup="web.slice", user=1000),
             Rule(name="c", action="reject", direction="egress")]
    c = compile_ruleset(Ruleset(rules=rules), "egress")
    assert c.config.cgroup_levels == (1 << 2) | (1 << 1)
    assert set(c.cgroup_classes) == {"svc/backup.service", "web.slice"} and set(c.user_classes) == {1000}
    assert compile_ruleset(Ruleset(rules=rules), "ingress").config.cgroup_levels == 0


def test_bitvector_layout_summary_then_words():
    rules = [Rule(name=f"r{i}", action="drop", protos=frozenset({6}) if i == 130 else frozenset({17}))
             for i in range(131)]
    c = compile_ruleset(Ruleset(rules=rules))
    assert (c.n_words, c.n_summary) == (3, 1)
    raw = c.bitvector_bytes()
    size = (c.n_summary + c.n_words) * 8
    tcp_class = c.class_of[shared.PROTO_BASE + 6]
    vec = raw[tcp_class * size : (tcp_class + 1) * size]
    words = [int.from_bytes(vec[i : i + 8], "little") for i in range(0, size, 8)]
    assert words == [0b100, 0, 0, 1 << 2]  # only word 2 (rule 130) is non-empty


def test_trie_classes_inherit_from_ancestors():
    rules = [Rule(name="wide", action="drop", src=(ipaddress.ip_network("10.0.0.0/8"),)),
             Rule(name="narrow", action="drop", src=(ipaddress.ip_network("10.1.0.0/16"),)),
             Rule(name="any", action="drop")]
    c = compile_ruleset(Ruleset(rules=rules))
    classes = {str(net): c.bitvectors[cid] for net, cid in c.tries["src4"]}
    assert classes == {"0.0.0.0/0": 0b100, "10.0.0.0/8": 0b101, "10.1.0.0/16": 0b111}
    assert {str(n): c.bitvectors[cid] for n, cid in c.tries["src6"]} == {"::/0": 0b100}


def test_too_many_rules_is_refused():
    rules = [Rule(name=f"r{i}", action="drop") for i in range(shared.MAX_RULES + 1)]
    try:
        compile_ruleset(Ruleset(rules=rules))
    except ValueError as exc:
        assert "at most" in str(exc)
    else:
        raise AssertionError("compiled more rules than the data plane holds")


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, (1 << (64 * n)) - 1))))
def test_summary_marks_the_words_in_use(case):
    """A bitvector's summary word has bit w set exactly when its word w is not zero."""
    from bpfwall.compiler import _summary, _word_low_bits

    n_words, bits = case
    words = bits.to_bytes(n_words * 8, "little")
    expected = sum(1 << w for w in range(n_words) if words[w * 8 : w * 8 + 8] != bytes(8))
    assert _summary(bits, _word_low_bits(n_words), n_words) == expected


def test_classes_tell_apart_bitsets_whose_int_hashes_collide():
    from bpfwall.compiler import _Classes

    classes = _Classes()
    # An int hashes modulo 2**61 - 1: 1 and 1 << 61 hash alike, and so do many rule bitsets.
    assert hash(1) == hash(1 << 61)
    ids = [classes.id_of(bits) for bits in (1, 1 << 61, 1 << 122, 0, 1, 1 << 61)]
    assert ids == [0, 1, 2, 3, 0, 1]
    assert classes.bitsets == [1, 1 << 61, 1 << 122, 0]


def _blocklist_config(rules: list[Rule]):
    sets = {n: {"type": "cidr", "size": 1, "slot": i} for i, n in enumerate(("a", "b", "c"))}
    return compile_ruleset(Ruleset(rules=rules, sets=sets)).config


def test_leading_source_set_drops_are_the_blocklist_rules():
    """Rules that drop by source set alone, before any other rule, are judged first by the
    data plane; each is given as its sets' bits among the src set references (sorted)."""
    cfg = _blocklist_config([
        Rule(name="x", action="drop", src=(), src_sets=("c",)),
        Rule(name="y", action="drop", src=(), src_sets=("a", "b")),
        Rule(name="z", action="accept", protos=frozenset({6}), dport=((22, 22),)),
        Rule(name="late", action="drop", src=(), src_sets=("a",)),
    ])
    assert cfg.n_blocklists == 2
    assert list(cfg.blocklist_sets)[:2] == [0b100, 0b011]


def test_a_rule_that_looks_at_more_than_the_source_set_ends_the_blocklist_rules():
    head = Rule(name="x", action="drop", src=(), src_sets=("a",))
    others = [
        Rule(name="r", action="reject", src=(), src_sets=("a",)),
        Rule(name="l", action="drop", src=(), src_sets=("a",), log=1.0),
        Rule(name="s", action="drop", src=(), src_sets=("a",), ct=frozenset({shared.CT_NEW})),
        Rule(name="p", action="drop", src=(), src_sets=("a",), protos=frozenset({17})),
        Rule(name="n", action="drop", src=(ipaddress.ip_network("10.200.0.0/16"),), src_sets=("a",)),
        Rule(name="d", action="drop", src=(), src_sets=("a",), dst_sets=("b",)),
        Rule(name="i", action="drop", src=(), src_sets=("a",), interfaces=("lo",)),
    ]
    for other in others:
        assert _blocklist_config([other, head]).n_blocklists == 0, other.name
        assert _blocklist_config([head, other]).n_blocklists == 1, other.name
    egress = Rule(name="e", action="drop", direction="egress", src=(), src_sets=("a",))
    assert compile_ruleset(Ruleset(rules=[egress], sets={"a": {"type": "cidr", "size": 1, "slot": 0}}),
                           "egress").config.n_blocklists == 0
