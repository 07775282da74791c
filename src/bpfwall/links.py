"""The links that put the scope's dispatcher on interfaces: XDP on ingress, tcx on egress.

A link is pinned per interface and direction (scope.link_pin); once made it stays, and
every apply after only changes what the dispatcher runs. These functions make, check,
move and remove those links.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, Any

from . import ifinfo, libbpf, owners
from .dispatcher import DIRECTIONS, HOOKS, Dispatcher
from .errors import RuntimeFailure
from .scope import Scope, State

if TYPE_CHECKING:
    from .transaction import ApplyReport

MODES = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}


def adopt(scope: Scope, disp: Dispatcher, old: State) -> set[str]:
    """Puts the generation in force under a new dispatcher before links move to it,
    so the move changes nothing a packet sees. Returns the directions whose program the
    new dispatcher cannot run (an older bpfwall's XDP program without xdp.frags): their
    links move only once the new generation is in force (move_late)."""
    late = set()
    for direction in DIRECTIONS:
        path = os.path.join(scope.gen_dir(old.generation), direction, "prog")
        if os.path.exists(path):
            fd = libbpf.obj_get(path)
            try:
                disp.stage(direction, old.generation, fd)
            except libbpf.BpfError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                late.add(direction)
            finally:
                os.close(fd)
    disp.flip(old.generation)
    return late


def move_late(scope: Scope, disp: Dispatcher, names: list[str], late: set[str]) -> None:
    """Moves the links adopt() could not move early onto the dispatcher, now running the
    new generation: they switch from the old rule set to the new one in one step."""
    for direction in late:
        for name in names:
            pin = scope.link_pin(name, direction)
            if os.path.exists(pin):
                point_at_dispatcher(libbpf.obj_get(pin), disp, direction)


def attach(scope: Scope, disp: Dispatcher, name: str, ifindex: int, old: dict[str, Any] | None,
            mode: str, egress: bool, report: ApplyReport, late: frozenset[str] = frozenset(),
            kind: str = "") -> dict[str, Any]:
    """Links the dispatcher to one interface: XDP always, tcx egress when the rule set
    has an egress program. A link already there stays (it already runs the dispatcher);
    one of a direction in late is left where it points, for move_late()."""
    info = {"ifindex": ifindex, "mode": attach_xdp(scope, disp, name, ifindex, old, mode, report,
                                                   "ingress" in late, kind),
            "egress": egress}
    if info["mode"] == "generic":
        # why, from this apply, or kept from the one that attached it
        info["generic_why"] = report.generic_why.get(name) or (old or {}).get("generic_why", "")
    if not egress:
        return info  # an egress link left from before stays until _finish: a rollback needs it
    pin = scope.link_pin(name, "egress")
    fd = live_link(pin, ifindex)
    if fd is not None:
        if "egress" in late:
            os.close(fd)
        else:
            point_at_dispatcher(fd, disp, "egress")
        return info
    fd = libbpf.link_create(disp.prog_fd("egress"), ifindex, libbpf.BPF_TCX_EGRESS)
    try:
        libbpf.obj_pin(fd, pin)
    finally:
        os.close(fd)
    return info


def point_at_dispatcher(fd: int, disp: Dispatcher, direction: str) -> None:
    """Moves a link an older bpfwall pointed at a generation onto the dispatcher; the
    dispatcher runs that same generation (_adopt), so packets see no change."""
    try:
        if libbpf.link_info(fd).prog_id != disp.dispatcher_id(direction):
            libbpf.link_update(fd, disp.prog_fd(direction))
    finally:
        os.close(fd)


def live_link(pin: str, ifindex: int) -> int | None:
    """An fd of the pinned link if it is attached to ifindex; a dead pin is removed."""
    if not os.path.exists(pin):
        return None
    fd = libbpf.obj_get(pin)
    if libbpf.link_info(fd).ifindex == ifindex:
        return fd
    # The interface was deleted or recreated: the link is dead.
    os.close(fd)
    os.unlink(pin)
    return None


# Why an interface of a kind has no native XDP, and what to do instead.
_NO_NATIVE = {
    "bridge": "a bridge has no native XDP; its ports do: protect the ports instead",
    "bond": "this bond's slaves' drivers lack native XDP, which a bond needs of every slave",
    "vlan": "a VLAN sub-interface has no native XDP; protect the interface under it "
            "(its frames carry the tag, which bpfwall reads)",
}


def no_native_xdp(kind: str) -> str:
    """Why the kernel refused native XDP with EOPNOTSUPP, in words."""
    return _NO_NATIVE.get(kind, f"its driver{f' ({kind})' if kind else ''} has no native XDP")


def too_large_for_native(name: str) -> str:
    """Why the kernel refused native XDP with ERANGE, in words: the interface's frames are
    larger than its driver takes into an XDP program (bpfwall's takes frames in fragments;
    a driver without multi-buffer XDP does not)."""
    mtu = ifinfo.mtu(name)
    return (f"its MTU{f' ({mtu})' if mtu else ''} is larger than its driver can give a native "
            "XDP program (one page, about 3,500 bytes of frame, for a driver without multi-buffer "
            "XDP); lower the MTU to use native mode")


def detach(pin: str) -> bool:
    if not os.path.exists(pin):
        return False
    fd = libbpf.obj_get(pin)
    try:
        with contextlib.suppress(libbpf.BpfError):
            libbpf.link_detach(fd)
    finally:
        os.close(fd)
    os.unlink(pin)
    return True


def attach_hooks(scope: Scope, disp: Dispatcher) -> None:
    """Links the dispatcher's connect and sendmsg hooks to the cgroup2 root, where they
    see every process (once: a link already there stays, pointing at the dispatcher)."""
    mount = owners.cgroup2_mount()
    if mount is None:
        raise RuntimeFailure("cgroup v2 is not mounted: connections cannot be judged at connect()")
    root = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for hook, attach_type in HOOKS.items():
            pin = scope.hook_pin(hook)
            if os.path.exists(pin):
                point_at_dispatcher(libbpf.obj_get(pin), disp, hook)
                continue
            fd = libbpf.link_create(disp.prog_fd(hook), root, attach_type)
            try:
                libbpf.obj_pin(fd, pin)
            finally:
                os.close(fd)
    finally:
        os.close(root)


def detach_hooks(scope: Scope) -> None:
    """Removes the connect and sendmsg hooks' links: no connect() pays for them."""
    for hook in HOOKS:
        detach(scope.hook_pin(hook))


def prune_hooks(scope: Scope, disp: Dispatcher) -> None:
    """Removes the hooks' links when the generation in force has no hook programs."""
    active = disp.active()
    if not any(disp.program_id(hook, active) for hook in HOOKS):
        detach_hooks(scope)


def attach_xdp(scope: Scope, disp: Dispatcher, name: str, ifindex: int, old: dict[str, Any] | None,
                mode: str, report: ApplyReport, late: bool = False, kind: str = "") -> str:
    pin = scope.link_pin(name)
    fd = live_link(pin, ifindex)
    if fd is not None:
        have = (old or {}).get("mode", "native")
        if mode not in ("auto", have):
            os.close(fd)
            raise RuntimeFailure(
                f"{name} is attached in {have} mode; run 'bpfwall down{scope.ns_arg()} -i {name}' first "
                f"to change to {mode} (it leaves the interface open meanwhile)")
        if late:
            os.close(fd)
        else:
            point_at_dispatcher(fd, disp, "ingress")
        report.swapped.append(name)
        return have
    tries = ["native", "generic"] if mode == "auto" else [mode]
    if mode == "generic":
        report.generic_why[name] = "asked for (--mode generic)"
    for i, m in enumerate(tries):
        try:
            fd = libbpf.link_create(disp.prog_fd("ingress"), ifindex, libbpf.BPF_XDP, MODES[m])
            break
        except libbpf.BpfError as exc:
            if exc.errno in (errno.EBUSY, errno.EEXIST):
                raise RuntimeFailure(
                    f"{name} already has an XDP program that is not bpfwall's; remove it first "
                    f"(ip link set dev {name} xdp off)") from None
            if m == "native" and exc.errno in (errno.ERANGE, errno.EOPNOTSUPP):
                why = (too_large_for_native(name) if exc.errno == errno.ERANGE
                       else no_native_xdp(kind))
                if i + 1 == len(tries):
                    raise RuntimeFailure(f"cannot attach to {name} in native mode: {why} "
                                         "(try --mode generic)") from None
                report.notes.append(f"{name}: generic mode: {why}")
                report.generic_why[name] = why
                continue
            if i + 1 == len(tries):
                hint = " (try --mode generic)" if m == "native" else ""
                raise RuntimeFailure(f"cannot attach to {name} in {m} mode: {exc}{hint}") from None
    try:
        libbpf.obj_pin(fd, pin)
    finally:
        os.close(fd)
    report.attached.append(name)
    return m
