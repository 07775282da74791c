"""What the kernel says of an interface, over netlink: its kind, what its XDP can do, and
what it failed to deliver.

Answers that bpfwall builds in XDP (reject's RSTs and ICMP errors, SYN cookies) go back out
of the interface they came in on. On a veth that is a frame handed to the other end, which
takes it only while that end polls for frames (NAPI): when it runs an XDP program or has GRO
on. The kernel advertises this as the veth's NETDEV_XDP_ACT_NDO_XMIT feature (netdev generic
netlink family). Even then a plain XDP_TX wakes the other end only if it runs XDP, so on a
veth bpfwall sends answers with a redirect to the interface itself, which does wake it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from typing import Any

from . import netns
from .errors import RuntimeFailure

# pyroute2 is imported where it is used: it takes a third of a second, which every
# command that imports the data plane would pay.

# include/uapi/linux/netdev.h (the header is newer than this distribution's)
NETDEV_FAMILY = "netdev"
NETDEV_CMD_DEV_GET = 1
NETDEV_XDP_ACT_NDO_XMIT = 1 << 2
IFF_LOOPBACK = 0x8  # include/uapi/linux/if.h
SIOCGIFMTU = 0x8921  # include/uapi/linux/sockios.h


@functools.cache
def _netdev_msg() -> type:
    """The netdev family's message, as pyroute2 decodes it."""
    from pyroute2.netlink import genlmsg

    class NetdevMsg(genlmsg):
        prefix = "NETDEV_A_DEV_"
        nla_map = (
            ("NETDEV_A_DEV_UNSPEC", "none"),
            ("NETDEV_A_DEV_IFINDEX", "uint32"),
            ("NETDEV_A_DEV_PAD", "none"),
            ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        )

    return NetdevMsg


def kinds(names: list[str], ns: str | None) -> dict[str, str]:
    """The link kind of each interface ('veth', 'bond', 'vlan', ...; '' for a device
    without one, such as a physical NIC)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    out: dict[str, str] = {}
    with netns.enter(ns), IPRoute() as ipr:
        for name in names:
            try:
                (link,) = ipr.link("get", ifname=name)
            except NetlinkError:
                continue
            info = link.get_attr("IFLA_LINKINFO")
            out[name] = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
    return out


def xdp_features(ifindex: int, ns: str | None) -> int | None:
    """The interface's NETDEV_XDP_ACT_* bits, or None where the kernel does not say."""
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    msg_class = _netdev_msg()
    with netns.enter(ns):
        try:
            sock = GenericNetlinkSocket()
        except OSError:
            return None
        try:
            sock.bind(NETDEV_FAMILY, msg_class)
            msg = msg_class()
            msg["cmd"] = NETDEV_CMD_DEV_GET
            msg["version"] = 1
            msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
            (reply,) = sock.nlm_request(msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST)
            return reply.get_attr("NETDEV_A_DEV_XDP_FEATURES")
        except (NetlinkError, OSError, ValueError):
            return None
        finally:
            sock.close()


def answers_blocked(kind: str, mode: str, ifindex: int, ns: str | None) -> str | None:
    """Why answers sent from native XDP on this interface cannot arrive, or None."""
    if kind != "veth" or mode != "native":
        return None
    features = xdp_features(ifindex, ns)
    if features is None or features & NETDEV_XDP_ACT_NDO_XMIT:
        return None
    return ("rejects and SYN cookies cannot reach the other end of this veth: it runs no XDP "
            "program and has GRO off; turn GRO on there (ethtool -K PEER gro on, in its namespace) "
            "or apply with --mode generic")


# Per-queue counters of a veth that count frames it could not deliver: XDP_TX failures, and
# drops after XDP (chiefly a redirect the other end could not take).
UNDELIVERED_STATS = ("xdp_tx_errors", "drops")


def undelivered(name: str, ns: str | None) -> int | None:
    """Frames the interface failed to send after XDP (the kernel's count since the interface
    was created, over its queues), or None where its driver does not count them, or where
    this process cannot look (a group member without root cannot enter a namespace)."""
    from pyroute2.ethtool.ioctl import EthtoolError, IoctlEthtool

    try:
        with netns.enter(ns):
            eth = IoctlEthtool(name)
            try:
                stats: dict[str, Any] = dict(eth.get_statistics())
            finally:
                with contextlib.suppress(OSError):
                    eth.close()
    except (RuntimeFailure, EthtoolError, OSError, ValueError):
        return None
    total, seen = 0, False
    for key, value in stats.items():
        if key.startswith("rx_queue_") and key.split("_", 3)[-1] in UNDELIVERED_STATS:
            total += int(value)
            seen = True
    return total if seen else None


def links_and_addresses(ns: str | None) -> tuple[list[str], list[bytes]]:
    """The namespace's interfaces other than loopback, and every address it has (16 bytes
    each, IPv4 as IPv4-mapped IPv6)."""
    from pyroute2 import IPRoute

    with netns.enter(ns), IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                 if not link["flags"] & IFF_LOOPBACK]
        addrs = []
        for msg in ipr.get_addr():
            packed = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS")).packed
            addrs.append(packed if len(packed) == 16 else bytes(10) + b"\xff\xff" + packed)
    return names, addrs


def mtu(name: str) -> int | None:
    """The interface's MTU in the current network namespace (SIOCGIFMTU), or None."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            got = fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si", name.encode()[:15], 0))
        return struct.unpack("16si", got)[1]
    except OSError:
        return None
