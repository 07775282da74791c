"""Named address sets: parsing a million prefixes fast, membership, and their table keys.

A set's elements live in the data plane's set tries, keyed by (set slot,
prefix), not in the rule classes; so adding an element is one map write and
a set of a million prefixes costs one trie lookup a packet. Elements are kept
as (family, network int, prefix length) triples: 1,000,000 of those load in
about a second, where ipaddress objects take several.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

Element = tuple[int, int, int]  # (family 4|6, network address as int, prefix length)

_FAMILY_BITS = {4: 32, 6: 128}


def parse_element(text: str) -> tuple[Element | None, str | None]:
    """An address or CIDR (host bits clear), as an Element, or an error message."""
    value = text.strip()
    addr, slash, plen_text = value.partition("/")
    try:
        if ":" in addr:
            family, raw = 6, socket.inet_pton(socket.AF_INET6, addr)
        else:
            family, raw = 4, socket.inet_pton(socket.AF_INET, addr)
    except OSError:
        return None, f"'{value}' is not an address or CIDR"
    bits = _FAMILY_BITS[family]
    if slash:
        if not plen_text.isdigit() or int(plen_text) > bits:
            return None, f"'{value}' is not an address or CIDR"
        plen = int(plen_text)
    else:
        plen = bits
    net = int.from_bytes(raw, "big")
    if net & ((1 << (bits - plen)) - 1):
        loose = ipaddress.ip_network(value, strict=False)
        return None, f"'{value}' has host bits set (did you mean {loose}?)"
    return (family, net, plen), None


def format_element(e: Element) -> str:
    family, net, plen = e
    if family == 4:
        text = socket.inet_ntop(socket.AF_INET, net.to_bytes(4, "big"))
    else:
        text = socket.inet_ntop(socket.AF_INET6, net.to_bytes(16, "big"))
    return text if plen == _FAMILY_BITS[family] else f"{text}/{plen}"


def from_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Element:
    return (net.version, int(net.network_address), net.prefixlen)


@dataclass
class CidrSet:
    """One named set of IPv4 and IPv6 prefixes, as the reference model and the loader see it."""

    name: str
    elements: set[Element] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self) -> Iterator[Element]:
        return iter(self.elements)

    def contains(self, family: int, addr: bytes) -> bool:
        """Whether an address (4 or 16 bytes, or 16 with an IPv4 one zero-padded) is in a prefix."""
        bits = _FAMILY_BITS[family]
        value = int.from_bytes(addr[: bits // 8], "big")
        for plen in self.prefix_lengths(family):
            if (family, value >> (bits - plen) << (bits - plen), plen) in self.elements:
                return True
        return False

    def prefix_lengths(self, family: int) -> list[int]:
        # Cached: the property tests ask for every packet of every example.
        cache = self.__dict__.setdefault("_plens", {})
        key = (family, len(self.elements))
        if key not in cache:
            cache.clear()
            cache[key] = sorted({p for f, _, p in self.elements if f == family})
        return cache[key]


def lpm_keys(slot: int, elements: Iterable[Element], family: int) -> tuple[bytes, int]:
    """The set trie keys of a family's elements: packed bpfwall_set{4,6}_key structs and their count.

    The key is (prefixlen, slot, address); the slot takes the first 32 bits of
    the prefix, so one trie holds every set and a lookup never leaves its set.
    """
    width = 4 if family == 4 else 16
    pack = struct.Struct(f"=II{width}s").pack
    out = [pack(32 + plen, slot, net.to_bytes(width, "big"))
           for fam, net, plen in elements if fam == family]
    return b"".join(out), len(out)
