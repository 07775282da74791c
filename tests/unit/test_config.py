"""The rule file: what it accepts, and a FILE:LINE message for everything it does not."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwall import config
from bpfwall.errors import InputError
from tests import strategies
from tests.profile import examples

GOOD = """\
version: 1
policy: {ingress: drop, egress: accept}
sets:
  blocklist:
    type: cidr
    elements: [203.0.113.0/24, "2001:db8:bad::/48"]
    files: [block.netset]
  web: {type: port, elements: [80, 443, "8000-8100"]}
rules:
  - {name: drop-blocklist, src: "@blocklist", action: drop}
  - {name: ssh, proto: tcp, dport: 22, src: [10.0.0.0/8, "2001:db8::/32"], action: accept}
  - {name: web, proto: tcp, dport: "@web", action: accept}
  - {name: ping, proto: icmp, icmp_type: echo-request, action: accept}
  - {name: syn, proto: tcp, tcp_flags: "syn,!ack", dport: "1000-2000", action: reject}
  - {name: v6-only, family: ipv6, proto: [udp, sctp], sport: [53, 5353], action: accept}
  - {name: unreach, proto: [icmp, icmpv6], icmp_type: destination-unreachable,
     icmp_code: port-unreachable, interfaces: eth1, action: accept}
"""


def write(tmp_path, text: str, name: str = "rules.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


@pytest.fixture
def good(tmp_path):
    (tmp_path / "block.netset").write_text("# FireHOL style\n198.51.100.0/24\n\n2001:db8:1::/48  # trailing\n")
    return write(tmp_path, GOOD)


def test_good_file_normalises(good):
    rs = config.load(good)
    by = {r.name: r for r in rs.rules}
    assert rs.policy == {"ingress": "drop", "egress": "accept"}
    assert by["drop-blocklist"].src == () and by["drop-blocklist"].src_sets == ("blocklist",)
    block = rs.cidr_sets["blocklist"]
    assert block.contains(4, ipaddress.ip_address("198.51.100.7").packed)
    assert block.contains(6, ipaddress.ip_address("2001:db8:1::9").packed)
    assert not block.contains(4, ipaddress.ip_address("198.51.101.7").packed)
    assert by["web"].dport == ((80, 80), (443, 443), (8000, 8100))
    assert by["ssh"].protos == {6} and by["ssh"].dport == ((22, 22),)
    assert by["syn"].tcp_flags == (0x12, 0x02)
    assert by["v6-only"].families == {6} and by["v6-only"].protos == {17, 132}
    assert {(m.family, m.type, m.code) for m in by["ping"].icmp} == {(4, 8, None)}
    assert {(m.family, m.type, m.code) for m in by["unreach"].icmp} == {(4, 3, 3), (6, 1, 4)}
    assert by["unreach"].interfaces == ("eth1",)
    # a drop policy gets the implicit essential-ICMPv6 rule, last
    assert rs.rules[-1].implicit and rs.rules[-1].action == "accept"
    assert rs.sets["blocklist"]["size"] == 4


def test_json_round_trip(good):
    rs = config.load(good)
    from bpfwall.ruleset import Ruleset

    again = Ruleset.from_json(rs.to_json())
    assert again.rules == rs.rules and again.policy == rs.policy


def test_ct_egress_and_conntrack_settings(tmp_path):
    rs = config.load(write(tmp_path, """\
        version: 1
        policy: {ingress: drop, egress: drop}
        conntrack: {max_entries: 4096, timeouts: {udp: 5s, tcp_established: 1h}}
        rules:
          - {name: est, ct: [established, related], action: accept}
          - {name: dns-out, direction: egress, proto: udp, dport: 53, action: accept}
        """))
    by = {(r.name, r.direction): r for r in rs.rules}
    assert by[("est", "ingress")].ct == {1, 2}
    assert by[("dns-out", "egress")].dport == ((53, 53),)
    assert ("*essential-icmpv6", "egress") in by and ("*essential-icmpv6", "ingress") in by
    assert rs.conntrack["max_entries"] == 4096
    assert rs.conntrack["timeouts"]["udp"] == 5 and rs.conntrack["timeouts"]["tcp_established"] == 3600
    assert rs.conntrack["timeouts"]["icmp"] == 30  # nf_conntrack's default
    assert rs.uses_ct() and rs.needs_egress()


def test_limits_bans_and_defences(tmp_path):
    rs = config.load(write(tmp_path, """\
        version: 1
        policy: {ingress: drop}
        conntrack:
          syn_cookies: {ports: [80, "8000-8002"], rate: 200/second}
          port_scan: {ports: 10, window: 30s, ban_for: 1h}
          reject_budget: {rate: 200/second, source_burst: 2}
        sets:
          mon: {type: cidr, elements: ["2001:db8::/64"]}
        never_ban: [192.0.2.1, "@mon"]
        rules:
          - {name: ping, proto: icmp, action: accept, limit: 10/second}
          - {name: up, proto: udp, action: accept, limit: {rate: 1000/second, bytes: true}}
          - {name: ssh-flood, proto: tcp, dport: 22, tcp_flags: "syn,!ack",
             limit: {rate: 5/minute, burst: 3, per: source, over: true}, action: ban, ban_for: 10m}
          - {name: bad, src: 192.0.2.0/24, action: ban}
        """))
    by = {r.name: r for r in rs.rules}
    assert (by["ping"].limit.count, by["ping"].limit.period, by["ping"].limit.burst) == (10, 1, 5)
    assert by["up"].limit.bytes and by["up"].limit.burst == 1000  # a second's worth of bytes
    lim = by["ssh-flood"].limit
    assert (lim.count, lim.period, lim.burst, lim.per_source, lim.over) == (5, 60, 3, True, True)
    assert by["ssh-flood"].ban_for == 600 and by["bad"].ban_for == 600 and by["bad"].limit is None
    assert rs.conntrack["syn_cookies"] == {"ports": [80, 8000, 8001, 8002], "count": 200, "period": 1,
                                           "burst": 200}
    assert rs.conntrack["port_scan"] == {"ports": 10, "window": 30, "ban_for": 3600}
    assert rs.never_ban == ["192.0.2.1/32", "@mon"]
    assert rs.never_banned(ipaddress.ip_address("192.0.2.1")) and rs.never_banned(ipaddress.ip_address("2001:db8::9"))
    assert not rs.never_banned(ipaddress.ip_address("192.0.2.2"))
    # what the budget does not say keeps the kernel's defaults
    assert rs.reject_budget() == {"count": 200, "period": 1, "burst": 50, "source_count": 1, "source_period": 1,
                                  "source_burst": 2}
    assert rs.bans_enabled() and rs.guarded("ingress") == [0, 1, 2, 3]
    from bpfwall.ruleset import Ruleset

    assert Ruleset.from_json(rs.to_json()).rules == rs.rules


def test_accept_policy_has_no_implicit_rule(tmp_path):
    rs = config.load(write(tmp_path, "version: 1\nrules:\n  - {name: a, action: drop}\n"))
    assert [r.name for r in rs.rules] == ["a"]
    assert rs.policy["ingress"] == "accept"


BAD = [
    ("yaml syntax", "version: 1\nrules:\n  - {name: a, action: drop\n", 4, "YAML syntax"),
    ("unknown key", "version: 1\nrules:\n  - name: a\n    action: drop\n    colour: red\n", 5, "unknown key"),
    ("unknown top key", "version: 1\npolicies: {}\n", 2, "unknown key"),
    ("bad cidr", "version: 1\nrules:\n  - {name: a, src: 10.0.0.300/8, action: drop}\n", 3, "not an address"),
    ("host bits", "version: 1\nrules:\n  - {name: a, src: 10.0.0.1/8, action: drop}\n", 3, "host bits"),
    ("port 70000", "version: 1\nrules:\n  - {name: a, proto: tcp,\n     dport: 70000, action: drop}\n", 4,
     "out of range"),
    ("backwards range", "version: 1\nrules:\n  - {name: a, proto: tcp, dport: 90-80, action: drop}\n", 3,
     "backwards"),
    ("dport without port proto", "version: 1\nrules:\n  - {name: a, dport: 22, action: drop}\n", 3,
     "need proto tcp"),
    ("dport with icmp", "version: 1\nrules:\n  - {name: a, proto: [tcp, icmp], dport: 22, action: drop}\n",
     3, "need proto tcp"),
    ("duplicate name", "version: 1\nrules:\n  - {name: a, action: drop}\n  - {name: a, action: accept}\n", 4,
     "duplicate rule name"),
    ("unknown set", "version: 1\nrules:\n  - {name: a, src: '@nope', action: drop}\n", 3, "unknown set"),
    ("set of wrong type", "version: 1\nsets: {p: {type: port, elements: [1]}}\nrules:\n"
     "  - {name: a, src: '@p', action: drop}\n", 4, "holds ports"),
    ("unreadable set file", "version: 1\nsets:\n  s:\n    type: cidr\n    files: [missing.netset]\n"
     "rules:\n  - {name: a, src: '@s', action: drop}\n", 5, "cannot read set file"),
    ("empty rules no policy", "version: 1\nrules: []\n", 2, "no rules and no policy"),
    ("no version", "rules:\n  - {name: a, action: drop}\n", 1, "version"),
    ("bad action", "version: 1\nrules:\n  - {name: a, action: allow}\n", 3, "action"),
    ("bad proto", "version: 1\nrules:\n  - {name: a, proto: tcpp, action: drop}\n", 3, "unknown protocol"),
    ("bad flag", "version: 1\nrules:\n  - {name: a, proto: tcp, tcp_flags: 'syn,!acx', action: drop}\n", 3,
     "unknown TCP flag"),
    ("flags without tcp", "version: 1\nrules:\n  - {name: a, tcp_flags: syn, action: drop}\n", 3, "needs proto tcp"),
    ("bad icmp type", "version: 1\nrules:\n  - {name: a, proto: icmp, icmp_type: echo, action: drop}\n", 3,
     "unknown ICMP type"),
    ("icmp type without proto", "version: 1\nrules:\n  - {name: a, icmp_type: 8, action: drop}\n", 3,
     "needs proto icmp"),
    ("bad rule name", "version: 1\nrules:\n  - {name: 'has space', action: drop}\n", 3, "not a valid rule name"),
    ("family mismatch", "version: 1\nrules:\n  - {name: a, family: ipv6, src: 10.0.0.0/8, action: drop}\n", 3,
     "never match"),
    ("duplicate key", "version: 1\nversion: 1\n", 2, "duplicate key"),
    ("bad log rate", "version: 1\nrules:\n  - {name: a, action: drop, log: 5/fortnight}\n", 3,
     "not a rate"),
    ("bad ct state", "version: 1\nrules:\n  - {name: a, ct: [establisehd], action: accept}\n", 3,
     "unknown connection state"),
    ("bad timeout", "version: 1\npolicy: {}\nconntrack:\n  timeouts: {udp: 30x}\n", 4, "not a duration"),
    ("unknown timeout", "version: 1\npolicy: {}\nconntrack:\n  timeouts: {tcp: 30}\n", 4, "unknown timeout"),
    ("ct table too small", "version: 1\npolicy: {}\nconntrack: {max_entries: 10}\n", 3, "out of range"),
    ("bad limit rate", "version: 1\nrules:\n  - {name: a, action: accept,\n     limit: 10/fortnight}\n", 4,
     "not a rate"),
    ("bad limit key", "version: 1\nrules:\n  - {name: a, action: accept,\n     limit: {rate: 1/second, per: dest}}\n",
     4, "per"),
    ("zero burst", "version: 1\nrules:\n  - {name: a, action: accept, limit: {rate: 1/second, burst: 0}}\n", 3,
     "out of range"),
    ("ban_for without ban", "version: 1\nrules:\n  - {name: a, action: drop, ban_for: 10m}\n", 3,
     "needs action: ban"),
    ("bad ban_for", "version: 1\nrules:\n  - {name: a, action: ban, ban_for: 10y}\n", 3, "not a duration"),
    ("egress ban", "version: 1\nrules:\n  - {name: a, direction: egress, action: ban}\n", 3, "ingress"),
    ("syn cookies no ports", "version: 1\npolicy: {}\nconntrack:\n  syn_cookies: {ports: []}\n", 4,
     "at least one"),
    ("scan ports range", "version: 1\npolicy: {}\nconntrack:\n  port_scan: {ports: 0}\n", 4, "out of range"),
    ("reject budget rate", "version: 1\npolicy: {}\nconntrack:\n  reject_budget: {rate: lots}\n", 4, "not a rate"),
    ("reject budget burst", "version: 1\npolicy: {}\nconntrack:\n  reject_budget: {source_burst: 0}\n", 4,
     "out of range"),
    ("never_ban unknown set", "version: 1\npolicy: {}\nnever_ban: [\"@nope\"]\n", 3, "unknown set"),
    ("never_ban bad cidr", "version: 1\npolicy: {}\nnever_ban: [10.0.0.300]\n", 3, "10.0.0.300"),
    ("empty file", "", 1, "empty"),
    ("not a mapping", "- a\n- b\n", 1, "mapping"),
]


@pytest.mark.parametrize("what,text,line,words", BAD, ids=[b[0] for b in BAD])
def test_bad_files_name_file_and_line(tmp_path, what, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        config.load(path)
    first = exc.value.problems[0]
    assert first.startswith(f"{path}:{line}:"), first
    assert words in first, first
    assert all("\n" not in p for p in exc.value.problems)


def test_bad_line_in_set_file_names_that_file(tmp_path):
    (tmp_path / "s.netset").write_text("10.0.0.0/8\nnot-a-cidr\n")
    path = write(tmp_path, "version: 1\nsets: {s: {type: cidr, files: [s.netset]}}\n"
                 "rules:\n  - {name: a, src: '@s', action: drop}\n")
    with pytest.raises(InputError) as exc:
        config.load(path)
    assert exc.value.problems[0].startswith(f"{tmp_path / 's.netset'}:2:")


def test_unreadable_rule_file():
    with pytest.raises(InputError) as exc:
        config.load("/nonexistent/rules.yaml")
    assert "cannot read" in exc.value.problems[0]


def test_group_is_a_group_name():
    ruleset = config.loads("version: 1\ngroup: bpfwall-readers\npolicy: {ingress: accept}\n", "g.yaml")
    assert ruleset.group == "bpfwall-readers"
    try:
        config.loads("version: 1\npolicy: {ingress: accept}\ngroup: 'no such'\n", "g.yaml")
    except InputError as exc:
        assert exc.problems == ["g.yaml:3: group: 'no such' is not a group name"]
    else:
        raise AssertionError("a bad group name was accepted")


def test_service_and_protocol_names_from_the_system_tables():
    rs = config.loads("version: 1\nrules:\n"
                      "  - {name: ssh, proto: tcp, dport: ssh, action: accept}\n"
                      "  - {name: web, proto: tcp, dport: [http, https, 8000-8100], action: accept}\n"
                      "  - {name: dns, proto: [udp, tcp], dport: domain, action: accept}\n"
                      "  - {name: v6, proto: ipv6-icmp, icmp_type: echo-request, action: accept}\n"
                      "  - {name: vrrp, proto: vrrp, action: accept}\n", "t.yaml")
    by = {r.name: r for r in rs.rules}
    assert by["ssh"].dport == ((22, 22),)
    assert by["web"].dport == ((80, 80), (443, 443), (8000, 8100))
    assert by["dns"].dport == ((53, 53),)
    assert by["v6"].protos == frozenset({58})
    assert by["vrrp"].protos == frozenset({112})
    with pytest.raises(InputError) as exc:
        config.loads("version: 1\nrules:\n  - {name: a, proto: tcp, dport: no-such-service, action: drop}\n"
                     "  - {name: b, proto: no-such-proto, action: drop}\n", "t.yaml")
    assert exc.value.problems == [
        "t.yaml:3: rules[0].dport: unknown service 'no-such-service' (not in the system's services table)",
        "t.yaml:4: rules[1].proto: unknown protocol 'no-such-proto' (known: icmp, igmp, tcp, udp, gre, esp, ah, "
        "icmpv6, sctp, udplite, the names in /etc/protocols, or a number)"]


def test_errors_quote_a_short_excerpt_of_a_huge_value():
    huge = "x" * 1_000_000
    with pytest.raises(InputError) as exc:
        config.loads(f"version: 1\nrules:\n  - {{name: {huge}, action: drop}}\n", "t.yaml")
    (line,) = exc.value.problems
    assert len(line) < 300 and "1,000,000 characters" in line and line.startswith("t.yaml:3: ")
    # a line longer than a MiB is refused before YAML parses it
    with pytest.raises(InputError) as exc:
        config.loads(f"version: 1\nrules:\n  - {{name: {huge * 5}, action: drop}}\n", "t.yaml")
    (line,) = exc.value.problems
    assert line.startswith("t.yaml:3: a line of 5,000,026 characters")


@settings(max_examples=examples(200), deadline=None)
@given(strategies.rulesets())
def test_state_json_is_the_rule_set(rs):
    """The state file's form of a rule set is plain JSON that reads back as the same rules:
    rule_json is written out by hand for speed, so every field must be in it."""
    import json
    from dataclasses import asdict

    from bpfwall.ruleset import Ruleset

    data = json.loads(json.dumps(rs.to_json()))
    assert Ruleset.from_json(data).rules == rs.rules
    for rule, written in zip(rs.rules, data["rules"], strict=True):
        assert set(written) == set(asdict(rule))


@settings(max_examples=examples(100), deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8), max_size=4), st.data())
def test_members_encoded_once_read_back_as_the_whole(data, draw):
    """An apply encodes the rule set once and splices it into the journal and the state."""
    import json

    from bpfwall.scope import encode_json

    keys = draw.draw(st.lists(st.sampled_from(sorted(data)), unique=True) if data else st.just([]))
    encoded = {k: json.dumps(data[k]) for k in keys}
    assert json.loads(encode_json(data, encoded)) == data
