"""Builds the test frames `explain` sends through the program (the tests use scapy)."""

from __future__ import annotations

import ipaddress
import struct

from . import names

SRC_MAC = b"\x02\x00\x00\x00\x00\x02"
DST_MAC = b"\x02\x00\x00\x00\x00\x01"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build(proto: int, src: str, dst: str, sport: int = 0, dport: int = 0, tcp_flags: int = 0x02,
          icmp_type: int | None = None, icmp_code: int = 0) -> bytes:
    """An Ethernet frame carrying one IPv4 or IPv6 packet with a minimal L4 header."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"{src} and {dst} are of different families")
    v6 = s.version == 6
    if proto == names.TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
    elif proto in (17, 132):
        l4 = struct.pack("!HHHH", sport, dport, 8, 0) + (b"\0" * 4 if proto == 132 else b"")
    elif proto in (names.ICMP, names.ICMPV6):
        t = icmp_type if icmp_type is not None else (128 if v6 else 8)
        l4 = struct.pack("!BBHI", t, icmp_code, 0, 0)
    else:
        l4 = b""
    if proto in (names.TCP, 17, names.ICMPV6) or (proto == names.ICMP and not v6):
        pseudo = (s.packed + d.packed + struct.pack("!HH", proto, len(l4))) if proto != names.ICMP else b""
        csum = checksum(pseudo + l4)
        at = {names.TCP: 16, 17: 6}.get(proto, 2)
        l4 = l4[:at] + struct.pack("!H", csum) + l4[at + 2 :]
    if v6:
        l3 = struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + s.packed + d.packed
        ethertype = 0x86DD
    else:
        hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0) + s.packed + d.packed
        l3 = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        ethertype = 0x0800
    return DST_MAC + SRC_MAC + struct.pack("!H", ethertype) + l3 + l4
