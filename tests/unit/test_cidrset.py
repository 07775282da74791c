"""The fast CIDR parser agrees with ipaddress, and set membership with plain containment."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwall.cidrset import CidrSet, format_element, from_network, parse_element
from tests.profile import examples


@settings(max_examples=examples(300))
@given(st.one_of(st.ip_addresses(v=4).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 32))),
                 st.ip_addresses(v=6).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 128)))))
def test_parse_and_format_agree_with_ipaddress(addr_plen):
    addr, plen = addr_plen
    text = f"{addr}/{plen}"
    element, err = parse_element(text)
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        assert element is None and "host bits set" in err
        return
    assert err is None and element == from_network(net)
    assert ipaddress.ip_network(format_element(element)) == net


def test_parse_errors_name_the_value():
    for bad in ("10.0.0.0/33", "10.0.0/8", "fd42::/129", "nonsense", "10.0.0.1/", "1.2.3.4/x"):
        element, err = parse_element(bad)
        assert element is None and f"'{bad}'" in err
    assert "did you mean 10.0.0.0/8" in parse_element("10.0.0.1/8")[1]
    assert parse_element("10.0.0.1")[0] == (4, 0x0A000001, 32)
    assert format_element((4, 0x0A000001, 32)) == "10.0.0.1"


@settings(max_examples=examples(200))
@given(st.lists(st.tuples(st.ip_addresses(v=4), st.integers(0, 32)), max_size=8), st.ip_addresses(v=4))
def test_contains_is_containment(prefixes, addr):
    nets = [ipaddress.ip_network((int(a), p), strict=False) for a, p in prefixes]
    s = CidrSet("s", {from_network(n) for n in nets})
    assert s.contains(4, addr.packed) == any(addr in n for n in nets)
