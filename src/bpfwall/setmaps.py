"""The CIDR set tables of a generation: filled by apply, changed in place by `bpfwall set`.

A set's networks live in the tries (set4, set6) in two copies, keyed slot * 2 + the low bit
of the set's version; its single addresses (/32, /128), most of a blocklist, in hash tables
(host4, host6), one entry each, whose value names the versions that hold the address (from
`since` until `until`). set_version[slot] is the version in force. A change writes the
tries' spare copy and the addresses as of the next version, then moves set_version on: one
array write, the moment every packet after it sees the whole change and no packet sees part
of it. A packet reads the version once and asks both tables about that version.

The old trie copy (the spare after the move) is brought level with the new one by the *next*
change, not right after it: a packet that read the version just before may still be walking
the old copy, and writing it then would show that packet a mix. The next change is a command
later, long after any such packet; it also deletes the addresses that left the set. What
levelling needs is recorded before the move (a Fix), so a command killed at any step leaves
the next one able to finish or undo it.

The hash tables are sized at load for the sets' addresses with a sixteenth to spare; an
address that finds no room goes into the tries instead, so a set grows as far as the tries'
cap either way.
"""

from __future__ import annotations

import ctypes
import errno
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from ctypes import c_uint32
from dataclasses import dataclass

from . import libbpf, shared
from .cidrset import CidrSet, Element, format_element, lpm_keys, parse_element
from .errors import RuntimeFailure

TRIES = {4: "set4", 6: "set6"}
HOSTS = {4: "host4", 6: "host6"}


@dataclass
class Fix:
    """How to finish a change (if set_version is `version`: the move happened) or undo it
    (if not). flipped: the change's (adds, removes); unflipped: the reverse."""

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
HOST_KEYS = {4: shared.Host4Key, 6: shared.Host6Key}
WIDTH = {4: 4, 6: 16}
FOREVER = shared.HOST_FOREVER
VERSION_MASK = 0xFFFFFFFF


def is_host(e: Element) -> bool:
    """A single address: the hash tables' kind of element."""
    return e[2] == WIDTH[e[0]] * 8


def held(span: shared.HostSpan | None, version: int) -> bool:
    """Whether a hash entry's address is in the set at version (what in_set() asks)."""
    return span is not None and span.since <= version < span.until


def fill(fds: dict[str, int], sets: dict[str, CidrSet], slots: dict[str, int]) -> None:
    """Loads every set at version 0 (a fresh generation): its addresses into the hash
    tables while they have room, the rest into both trie copies.

    The trie elements go in in address order: the kernel's trie then inserts each next to
    the last one it touched, five times faster for a million prefixes than in a set's
    order. The second copy's keys are the first's with the slot field changed."""
    room = {family: libbpf.map_info(fds[table]).max_entries if table in fds else 0
            for family, table in HOSTS.items()}
    for name, cset in sets.items():
        slot = slots[name]
        for family, table in TRIES.items():
            bits = WIDTH[family] * 8
            hosts = sorted(net for fam, net, plen in cset.elements if fam == family and plen == bits)
            hashed = hosts[: room[family]]
            room[family] -= len(hashed)
            if hashed:
                _write_hosts_batch(fds[HOSTS[family]], slot, family, hashed)
            in_trie = [e for e in cset.elements if e[0] == family and e[2] != bits]
            in_trie += [(family, net, bits) for net in hosts[len(hashed):]]
            words, values, n = _sorted_keys(in_trie, family)
            if not n:
                continue
            stride = len(words) // n  # u32 words a key: prefixlen, key slot, address
            for copy in (0, 1):
                words[1::stride] = array("I", [slot * 2 + copy]) * n
                _write_keys(fds[table], words.tobytes(), values, n)
        libbpf.map_update(fds["set_version"], c_uint32(slot), c_uint32(0))


def _key_words(nets: list[int], family: int, lead: int) -> array:
    """Packed keys of `lead` u32 words (left 0, for the caller) followed by each address in
    network order. Built a column at a time: slicing arrays is C's work, where a struct per
    element took seconds for a million."""
    n = len(nets)
    per_addr = WIDTH[family] // 4
    stride = lead + per_addr
    addrs = array("I")
    addrs.frombytes(b"".join(net.to_bytes(WIDTH[family], "big") for net in nets))
    words = array("I", bytes(4 * stride * n))
    for j in range(per_addr):
        words[lead + j :: stride] = addrs[j::per_addr]
    return words


def _write_hosts_batch(fd: int, slot: int, family: int, hosts: list[int]) -> None:
    """Addresses (ints) into a host table in one batch, in the set from version 0 on."""
    n = len(hosts)
    stride = 1 + WIDTH[family] // 4  # u32 words a key: slot, address
    words = _key_words(hosts, family, 1)
    words[0::stride] = array("I", [slot]) * n
    keys = ctypes.create_string_buffer(words.tobytes(), 4 * stride * n)
    values = ctypes.create_string_buffer(bytes(shared.HostSpan(0, FOREVER)) * n, ctypes.sizeof(shared.HostSpan) * n)
    try:
        libbpf.map_update_batch_raw(fd, keys, values, 4 * stride, ctypes.sizeof(shared.HostSpan), n)
    except libbpf.BpfError as exc:
        raise RuntimeFailure(f"cannot write set elements: {exc}") from None


def _sorted_keys(elements: Iterable[Element], family: int) -> tuple[array, ctypes.Array, int]:
    """The trie keys of a family's elements in address order, as u32 words (the key slot
    left 0), their values (the prefix length), and how many. Sorted as plain ints: a tuple
    sort took seconds for a million."""
    shift = 8  # an element as one int: network << 8 | prefix length, which sorts by address
    ordered = sorted(net << shift | plen for fam, net, plen in elements if fam == family)
    n = len(ordered)
    if not n:
        return array("I"), (c_uint32 * 0)(), 0
    plens = array("I", [x & 0xFF for x in ordered])
    words = _key_words([x >> shift for x in ordered], family, 2)
    words[0 :: 2 + WIDTH[family] // 4] = array("I", [32 + p for p in plens])
    return words, (c_uint32 * n).from_buffer_copy(plens.tobytes()), n


def _write_keys(fd: int, keys: bytes, values: ctypes.Array, n: int) -> None:
    buf = ctypes.create_string_buffer(keys, len(keys))
    try:
        libbpf.map_update_batch_raw(fd, buf, values, len(keys) // n, 4, n)
    except libbpf.BpfError as exc:
        raise RuntimeFailure(f"cannot write set elements: {exc}") from None


def _write_trie(fds: dict[str, int], key_slot: int, elements: Iterable[Element]) -> None:
    elements = list(elements)
    for family, name in TRIES.items():
        keys, n = lpm_keys(key_slot, elements, family)
        if not n:
            continue
        values = (c_uint32 * n)(*[e[2] for e in elements if e[0] == family])
        _write_keys(fds[name], keys, values, n)


def _delete_trie(fds: dict[str, int], key_slot: int, elements: Iterable[Element]) -> None:
    for e in elements:
        libbpf.map_delete(fds[TRIES[e[0]]], _key(key_slot, e))


def _host_key(slot: int, e: Element) -> ctypes.Structure:
    family, net, _ = e
    return HOST_KEYS[family](slot, (ctypes.c_uint8 * WIDTH[family])(*net.to_bytes(WIDTH[family], "big")))


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
            for name in ("set4", "set6", "set_version", *HOSTS.values()):
                path = os.path.join(directory, name)
                if name in HOSTS.values() and not os.path.exists(path):
                    continue  # a generation loaded before sets had host tables: all in the tries
                self.fds[name] = libbpf.obj_get(path)
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
        """The set's version in force (its trie copy: the low bit)."""
        value = c_uint32()
        libbpf.map_lookup(self.fds["set_version"], c_uint32(slot), value)
        return value.value

    def span(self, slot: int, e: Element) -> shared.HostSpan | None:
        """The versions whose set holds address e by its hash entry (None: it has none)."""
        table = HOSTS[e[0]]
        if not is_host(e) or table not in self.fds:
            return None
        span = shared.HostSpan()
        return span if libbpf.map_lookup(self.fds[table], _host_key(slot, e), span) else None

    def _set_span(self, slot: int, e: Element, since: int, until: int) -> bool:
        """Writes e's hash entry; False when the hash has no room for a new one."""
        try:
            libbpf.map_update(self.fds[HOSTS[e[0]]], _host_key(slot, e), shared.HostSpan(since, until))
        except libbpf.BpfError as exc:
            if exc.errno == errno.E2BIG:
                return False
            raise RuntimeFailure(f"cannot write set elements: {exc}") from None
        return True

    def _drop_host(self, slot: int, e: Element) -> None:
        libbpf.map_delete(self.fds[HOSTS[e[0]]], _host_key(slot, e))

    def contains(self, slot: int, e: Element, version: int | None = None) -> bool:
        """Whether e itself (not only a prefix covering it) is an element of the set
        (version: the one in force, if the caller has read it already)."""
        v = self.version(slot) if version is None else version
        if held(self.span(slot, e), v):
            return True
        value = c_uint32()
        found = libbpf.map_lookup(self.fds[TRIES[e[0]]], _key(slot * 2 + (v & 1), e), value)
        # The trie answers with the longest element covering e; its value is that
        # element's prefix length, so an equal length means e itself.
        return found and value.value == e[2]

    def level(self, slot: int, fix: Fix | None) -> None:
        """Finishes the change `fix` describes if its move happened, else undoes it: the
        spare trie copy made equal to the one in force, and the hash entries of the
        change's addresses made final (those that left the set are deleted)."""
        if fix is None:
            return
        current = self.version(slot)
        spare_key = slot * 2 + 1 - (current & 1)
        adds, removes = fix.flipped  # the change itself
        moved = current == fix.version
        trie_adds, trie_removes = [], []
        for e in adds:
            span = self.span(slot, e)
            if span is None:
                trie_adds.append(e)
            elif not moved and span.since == fix.version:  # written for a version that never came
                self._drop_host(slot, e)
        for e in removes:
            span = self.span(slot, e)
            if span is None:
                trie_removes.append(e)
            elif moved and span.until <= current:  # gone from the set: no packet reads it now
                self._drop_host(slot, e)
            elif not moved and span.until == fix.version:
                self._set_span(slot, e, span.since, FOREVER)
        if moved:  # the old copy gets the change
            _write_trie(self.fds, spare_key, trie_adds)
            _delete_trie(self.fds, spare_key, trie_removes)
        else:  # the spare may hold part of it: taken back
            _write_trie(self.fds, spare_key, trie_removes)
            _delete_trie(self.fds, spare_key, trie_adds)

    def change(self, slot: int, add: list[Element], remove: list[Element],
               record: Callable[[Fix], None]) -> None:
        """Adds elements that are not in the set and removes elements that are, in one
        step that packets see whole. The last change must have been levelled (level()).

        record(fix) must store the fix durably; it is called before anything changes.
        """
        new = (self.version(slot) + 1) & VERSION_MASK
        record(Fix(version=new, flipped=(add, remove), unflipped=(remove, add)))
        trie_adds, trie_removes = [], []
        for e in add:
            if not (is_host(e) and HOSTS[e[0]] in self.fds and self._set_span(slot, e, new, FOREVER)):
                trie_adds.append(e)  # a network, or no room in the hash
        for e in remove:
            span = self.span(slot, e)
            if span is None:
                trie_removes.append(e)
            else:
                self._set_span(slot, e, span.since, new)
        spare_key = slot * 2 + (new & 1)
        _write_trie(self.fds, spare_key, trie_adds)
        _delete_trie(self.fds, spare_key, trie_removes)
        libbpf.map_update(self.fds["set_version"], c_uint32(slot), c_uint32(new))

    def view(self, slot: int) -> PinnedSet:
        return PinnedSet(self, slot)

    def elements(self, slot: int, version: int | None = None) -> Iterator[Element]:
        """The set's elements at version (by default the one in force)."""
        v = self.version(slot) if version is None else version
        for family, name in HOSTS.items():
            if name not in self.fds:
                continue
            key, nxt, span = None, HOST_KEYS[family](), shared.HostSpan()
            while libbpf.map_next_key(self.fds[name], key, nxt):
                if nxt.slot == slot and libbpf.map_lookup(self.fds[name], nxt, span) and held(span, v):
                    yield (family, int.from_bytes(bytes(nxt.addr), "big"), WIDTH[family] * 8)
                key, nxt = nxt, HOST_KEYS[family]()
        key_slot = slot * 2 + (v & 1)
        for family, name in TRIES.items():
            fd = self.fds[name]
            key, nxt = None, KEYS[family]()
            while libbpf.map_next_key(fd, key, nxt):
                if nxt.key_slot == key_slot:
                    yield (family, int.from_bytes(bytes(nxt.addr), "big"), nxt.prefixlen - 32)
                key, nxt = nxt, KEYS[family]()


class PinnedSet:
    """A set in force, as the reference model asks about it (CidrSet.contains), answered
    from the kernel's tables: `explain` must not read a million elements for one packet."""

    def __init__(self, tables: SetTables, slot: int) -> None:
        self.tables, self.slot = tables, slot

    def contains(self, family: int, addr: bytes) -> bool:
        width = WIDTH[family]
        e = (family, int.from_bytes(addr[:width], "big"), width * 8)
        v = self.tables.version(self.slot)
        if held(self.tables.span(self.slot, e), v):
            return True
        value = c_uint32()
        return libbpf.map_lookup(self.tables.fds[TRIES[family]], _key(self.slot * 2 + (v & 1), e), value)
