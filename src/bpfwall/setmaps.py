"""The CIDR set tables of a generation: filled by apply, changed in place by `bpfwall set`.

Each set has two copies in the set tries, keyed slot * 2 + version, and
set_version[slot] names the current one. A change writes the spare copy, then
flips set_version[slot]: one array write, the moment every packet after it
sees the whole change and no packet sees part of it.

The old copy (the spare after the flip) is brought level with the new one by
the *next* change, not right after the flip: a packet that read the version
just before the flip may still be walking the old copy, and writing it then
would show that packet a mix. The next change is a command later, long after
any such packet. What levelling needs is recorded before the flip (a Fix), so
a command killed at any step leaves the next one able to level the spare.
"""

from __future__ import annotations

import ctypes
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from ctypes import c_uint32
from dataclasses import dataclass

from . import libbpf, shared
from .cidrset import CidrSet, Element, format_element, lpm_keys, parse_element
from .errors import RuntimeFailure

TRIES = {4: "set4", 6: "set6"}


@dataclass
class Fix:
    """How to bring a set's spare copy level after a change: apply `flipped` (adds,
    removes) if set_version is `version` (the flip happened), else `unflipped`."""

    version: int
    flipped: tuple[list[Element], list[Element]]
    unflipped: tuple[list[Element], list[Element]]

    def to_json(self) -> dict:
        def side(pair: tuple[list[Element], list[Element]]) -> list[list[str]]:
            return [[format_element(e) for e in part] for part in pair]

        return {"version": self.version, "flipped": side(self.flipped), "unflipped": side(self.unflipped)}

    @classmethod
    def from_json(cls, data: dict | None) -> Fix | None:
        if not data:
            return None

        def side(pair: list[list[str]]) -> tuple[list[Element], list[Element]]:
            add, remove = ([parse_element(t)[0] for t in part] for part in pair)
            return add, remove

        return cls(data["version"], side(data["flipped"]), side(data["unflipped"]))
KEYS = {4: shared.Set4Key, 6: shared.Set6Key}
WIDTH = {4: 4, 6: 16}


def fill(fds: dict[str, int], sets: dict[str, CidrSet], slots: dict[str, int]) -> None:
    """Loads every set into both copies, the first one current (a fresh generation).

    The elements go in in address order: the kernel's trie then inserts each next to the
    last one it touched, five times faster for a million prefixes than in a set's order.
    The second copy's keys are the first's with the slot field changed."""
    for name, cset in sets.items():
        slot = slots[name]
        for family, table in TRIES.items():
            words, values, n = _sorted_keys(cset.elements, family)
            if not n:
                continue
            stride = len(words) // n  # u32 words a key: prefixlen, key slot, address
            for version in (0, 1):
                words[1::stride] = array("I", [slot * 2 + version]) * n
                _write_keys(fds[table], words.tobytes(), values, n)
        libbpf.map_update(fds["set_version"], c_uint32(slot), c_uint32(0))


def _sorted_keys(elements: Iterable[Element], family: int) -> tuple[array, ctypes.Array, int]:
    """The trie keys of a family's elements in address order, as u32 words (the key slot
    left 0), their values (the prefix length), and how many. Built a column at a time:
    sorting plain ints and slicing arrays is C's work, where a tuple sort and a struct per
    element took seconds for a million."""
    width = WIDTH[family]
    shift = 8  # an element as one int: network << 8 | prefix length, which sorts by address
    ordered = sorted(net << shift | plen for fam, net, plen in elements if fam == family)
    n = len(ordered)
    if not n:
        return array("I"), (c_uint32 * 0)(), 0
    plens = array("I", [x & 0xFF for x in ordered])
    addrs = array("I")
    addrs.frombytes(b"".join((x >> shift).to_bytes(width, "big") for x in ordered))
    per_addr = width // 4
    stride = 2 + per_addr
    words = array("I", bytes(4 * stride * n))
    words[0::stride] = array("I", [32 + p for p in plens])
    for j in range(per_addr):
        words[2 + j :: stride] = addrs[j::per_addr]
    return words, (c_uint32 * n).from_buffer_copy(plens.tobytes()), n


def _write_keys(fd: int, keys: bytes, values: ctypes.Array, n: int) -> None:
    buf = ctypes.create_string_buffer(keys, len(keys))
    try:
        libbpf.map_update_batch_raw(fd, buf, values, len(keys) // n, 4, n)
    except libbpf.BpfError as exc:
        raise RuntimeFailure(f"cannot write set elements: {exc}") from None


def _write(fds: dict[str, int], key_slot: int, elements: Iterable[Element]) -> None:
    elements = list(elements)
    for family, name in TRIES.items():
        keys, n = lpm_keys(key_slot, elements, family)
        if not n:
            continue
        values = (c_uint32 * n)(*[e[2] for e in elements if e[0] == family])
        _write_keys(fds[name], keys, values, n)


def _delete(fds: dict[str, int], key_slot: int, elements: Iterable[Element]) -> None:
    for e in elements:
        libbpf.map_delete(fds[TRIES[e[0]]], _key(key_slot, e))


def _key(key_slot: int, e: Element) -> ctypes.Structure:
    family, net, plen = e
    raw = net.to_bytes(WIDTH[family], "big")
    return KEYS[family](32 + plen, key_slot, (ctypes.c_uint8 * WIDTH[family])(*raw))


class SetTables:
    """The pinned set tables of the generation in force."""

    def __init__(self, directory: str | None, fds: dict[str, int] | None = None) -> None:
        """The tables pinned in directory, or (directory None) copies of the fds given."""
        self.fds: dict[str, int] = {}
        if directory is None:
            self.fds = {name: os.dup(fd) for name, fd in (fds or {}).items()}
            return
        try:
            for name in ("set4", "set6", "set_version"):
                self.fds[name] = libbpf.obj_get(os.path.join(directory, name))
        except libbpf.BpfError as exc:
            self.close()
            raise RuntimeFailure(f"the set tables in {directory} are unreadable: {exc}") from None

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __enter__(self) -> SetTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, slot: int) -> int:
        value = c_uint32()
        libbpf.map_lookup(self.fds["set_version"], c_uint32(slot), value)
        return value.value & 1

    def contains(self, slot: int, e: Element, version: int | None = None) -> bool:
        """Whether e itself (not only a prefix covering it) is an element of the set
        (version: the current one, if the caller has read it already)."""
        value = c_uint32()
        key_slot = slot * 2 + (self.version(slot) if version is None else version)
        found = libbpf.map_lookup(self.fds[TRIES[e[0]]], _key(key_slot, e), value)
        # The trie answers with the longest element covering e; its value is that
        # element's prefix length, so an equal length means e itself.
        return found and value.value == e[2]

    def level(self, slot: int, fix: Fix | None) -> None:
        """Makes the spare copy equal the current one, after the change `fix` describes."""
        if fix is None:
            return
        current = self.version(slot)
        add, remove = fix.flipped if current == fix.version else fix.unflipped
        spare_key = slot * 2 + 1 - current
        _write(self.fds, spare_key, add)
        _delete(self.fds, spare_key, remove)

    def change(self, slot: int, add: list[Element], remove: list[Element],
               record: Callable[[Fix], None]) -> None:
        """Adds elements that are not in the set and removes elements that are, in one
        step that packets see whole. The spare copy must be level (see level()).

        record(fix) must store the fix durably; it is called before anything changes.
        """
        spare = 1 - self.version(slot)
        # If the flip happened, the old copy lacks this change; if not, the spare
        # holds (part of) it and must lose it again.
        record(Fix(version=spare, flipped=(add, remove), unflipped=(remove, add)))
        spare_key = slot * 2 + spare
        _write(self.fds, spare_key, add)
        _delete(self.fds, spare_key, remove)
        libbpf.map_update(self.fds["set_version"], c_uint32(slot), c_uint32(spare))

    def view(self, slot: int) -> PinnedSet:
        return PinnedSet(self, slot)

    def elements(self, slot: int) -> Iterator[Element]:
        key_slot = slot * 2 + self.version(slot)
        for family, name in TRIES.items():
            fd = self.fds[name]
            key, nxt = None, KEYS[family]()
            while libbpf.map_next_key(fd, key, nxt):
                if nxt.key_slot == key_slot:
                    yield (family, int.from_bytes(bytes(nxt.addr), "big"), nxt.prefixlen - 32)
                key, nxt = nxt, KEYS[family]()


class PinnedSet:
    """A set in force, as the reference model asks about it (CidrSet.contains), answered
    from the kernel's table: `explain` must not read a million elements for one packet."""

    def __init__(self, tables: SetTables, slot: int) -> None:
        self.tables, self.slot = tables, slot

    def contains(self, family: int, addr: bytes) -> bool:
        width = WIDTH[family]
        bits = width * 8
        e = (family, int.from_bytes(addr[:width], "big"), bits)
        value = c_uint32()
        key = _key(self.slot * 2 + self.tables.version(self.slot), e)
        return libbpf.map_lookup(self.tables.fds[TRIES[family]], key, value)
