"""The scope's attached programs and the one switch that picks the generation in force.

The links of every interface point at the dispatcher (bpf/dispatch.bpf.c), loaded once
per scope and pinned; it jumps to the generation whose number `active` holds. Putting
a generation in force on every interface and in both directions is one map write
(`flip`), so no interrupted apply can leave a mix of two rule sets.

    /sys/fs/bpf/bpfwall/<scope>/dispatch/{ingress,egress}           the programs links point at
    /sys/fs/bpf/bpfwall/<scope>/dispatch/{active,ingress_gens,egress_gens}   the switch
    /sys/fs/bpf/bpfwall/<scope>/dispatch/{connect4,...}, {connect4_gens,...}  the same for the
        cgroup connect and sendmsg hooks (HOOKS), which a dispatcher made by an older bpfwall
        lacks: the next apply makes the dispatcher anew and moves the links to it
"""

from __future__ import annotations

import contextlib
import os
from ctypes import c_uint32

from . import libbpf
from .errors import RuntimeFailure
from .maps import DISPATCH_MAPS

DIRECTIONS = ("ingress", "egress")
# The cgroup hooks where connect() and sendmsg() are judged (bpf/sockaddr.h), by the name of
# their programs here and in a generation, with the cgroup attach type of each.
HOOKS = {"connect4": libbpf.BPF_CGROUP_INET4_CONNECT, "connect6": libbpf.BPF_CGROUP_INET6_CONNECT,
         "sendmsg4": libbpf.BPF_CGROUP_UDP4_SENDMSG, "sendmsg6": libbpf.BPF_CGROUP_UDP6_SENDMSG}
PROGRAMS = {"ingress": "bpfwall_ingress", "egress": "bpfwall_egress",
            **{hook: f"bpfwall_{hook}" for hook in HOOKS}}
SLOTS = {name: f"{name}_gens" for name in (*DIRECTIONS, *HOOKS)}
MAPS = tuple(m.name for m in DISPATCH_MAPS)
REQUIRED = (*DIRECTIONS, "active", SLOTS["ingress"], SLOTS["egress"])
# The dispatcher's version, in its `abi` map. 2: the ingress program takes jumbo frames
# (xdp.frags), and the connect and sendmsg hooks are there. A dispatcher of another version
# (or of none: an older bpfwall's) is made anew by the next apply, and the links moved to it.
ABI = 2


def object_path() -> str:
    path = os.environ.get("BPFWALL_DISPATCH_OBJECT") or os.path.join(
        os.path.dirname(__file__), "bpf", "dispatch.bpf.o")
    if not os.path.exists(path):
        raise RuntimeFailure(f"BPF object {path} is missing: run 'make build'")
    return path


def slot_of(generation: int) -> c_uint32:
    return c_uint32(generation & 1)


class Dispatcher:
    def __init__(self, directory: str, fds: dict[str, int]) -> None:
        self.directory = directory
        self.fds = fds  # "ingress", "egress" (programs) and MAPS

    @classmethod
    def open(cls, directory: str) -> Dispatcher | None:
        """The pinned dispatcher, or None when this scope has none (yet)."""
        names = (*DIRECTIONS, *HOOKS, *MAPS)
        if not all(os.path.exists(os.path.join(directory, n)) for n in REQUIRED):
            return None
        names = tuple(n for n in names if n in REQUIRED or os.path.exists(os.path.join(directory, n)))
        fds: dict[str, int] = {}
        try:
            for name in names:
                fds[name] = libbpf.obj_get(os.path.join(directory, name))
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return cls(directory, fds)

    @classmethod
    def create(cls, directory: str) -> Dispatcher:
        """Loads and pins a dispatcher (replacing the remains of a half-made one)."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        with libbpf.BpfObject(object_path()) as obj:
            try:
                obj.load()
            except libbpf.BpfError as exc:
                raise RuntimeFailure(f"the kernel refused the dispatcher: {exc}") from None
            for d in (*DIRECTIONS, *HOOKS):
                libbpf.obj_pin(obj.prog_fd(PROGRAMS[d]), os.path.join(directory, d))
            libbpf.map_update(obj.map_fd("abi"), c_uint32(0), c_uint32(ABI))
            for name in MAPS:
                libbpf.obj_pin(obj.map_fd(name), os.path.join(directory, name))
        made = cls.open(directory)
        assert made is not None
        return made

    @classmethod
    def open_or_create(cls, directory: str) -> tuple[Dispatcher, bool]:
        found = cls.open(directory)
        return (found, False) if found else (cls.create(directory), True)

    def prog_fd(self, direction: str) -> int:
        return self.fds[direction]

    @property
    def current(self) -> bool:
        """Whether this dispatcher is of this bpfwall's version (ABI)."""
        if "abi" not in self.fds:
            return False
        value = c_uint32()
        libbpf.map_lookup(self.fds["abi"], c_uint32(0), value)
        return value.value == ABI and self.has_hooks

    @property
    def has_hooks(self) -> bool:
        """Whether this dispatcher has the connect and sendmsg hooks (see the module's doc)."""
        return all(hook in self.fds and SLOTS[hook] in self.fds for hook in HOOKS)

    def active(self) -> int:
        """The number of the generation in force (0: none yet)."""
        value = c_uint32()
        libbpf.map_lookup(self.fds["active"], c_uint32(0), value)
        return value.value

    def stage(self, direction: str, generation: int, prog_fd: int | None) -> None:
        """Puts a generation's program in its slot (None empties the slot: that
        direction then passes everything while the generation is in force).
        direction: one of DIRECTIONS or HOOKS."""
        if SLOTS[direction] not in self.fds:
            if prog_fd is None:
                return  # a dispatcher without hooks: nothing to empty
            raise RuntimeFailure(f"this scope's dispatcher has no {direction} hook")
        fd = self.fds[SLOTS[direction]]
        if prog_fd is None:
            libbpf.map_delete(fd, slot_of(generation))
        else:
            libbpf.map_update(fd, slot_of(generation), c_uint32(prog_fd))

    def clear(self, generation: int) -> None:
        """Empties a generation's slots in both directions (its programs are freed)."""
        if generation == self.active():
            raise RuntimeFailure(f"generation {generation} is in force: its programs cannot be removed")
        for direction in (*DIRECTIONS, *HOOKS):
            self.stage(direction, generation, None)

    def flip(self, generation: int) -> None:
        """Puts generation in force everywhere at once."""
        libbpf.map_update(self.fds["active"], c_uint32(0), c_uint32(generation))

    def program_id(self, direction: str, generation: int) -> int:
        """The id of the program in a generation's slot (0: empty)."""
        value = c_uint32()
        if SLOTS[direction] not in self.fds:
            return 0
        with contextlib.suppress(libbpf.BpfError):
            if libbpf.map_lookup(self.fds[SLOTS[direction]], slot_of(generation), value):
                return value.value
        return 0

    def dispatcher_id(self, direction: str) -> int:
        return libbpf.prog_info(self.fds[direction]).id

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
