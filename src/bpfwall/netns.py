"""Enter a network namespace by name, for this thread only, and come back.

Only the network namespace changes (setns with CLONE_NEWNET): the mount
namespace, and so the host's bpffs at /sys/fs/bpf, stays ours. This is why
bpfwall never uses `ip netns exec`, which remounts /sys.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

from .errors import RuntimeFailure

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"cannot enter network namespace: {os.strerror(err)}")


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


@contextlib.contextmanager
def enter(name: str | None) -> Iterator[None]:
    """Runs the block inside network namespace `name` (None: stay where we are)."""
    if not name:
        yield
        return
    if "/" in name or not exists(name):
        raise RuntimeFailure(f"network namespace '{name}' does not exist")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def ifindex(name: str, netns: str | None = None) -> int:
    """The interface's index in the current namespace; RuntimeFailure if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        where = f" in network namespace '{netns}'" if netns else ""
        raise RuntimeFailure(f"interface '{name}' does not exist{where}") from None


SO_NETNS_COOKIE = 71  # include/uapi/asm-generic/socket.h


def cookie(name: str | None = None) -> int:
    """The namespace's cookie, as bpf_get_netns_cookie() gives it to BPF programs."""
    with enter(name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
