"""The CIDR set tables of a generation: filled by apply, changed in place by `bpfwall set`.

A set's single addresses (/32, /128) and IPv4 networks, most of any blocklist, live in the
host tables (host4, host6: see hosttable), one entry each, which names the versions that hold
the element (from `since` until `until`); its IPv6 networks, and what finds no place in the
host tables, in the tries (set4, set6) in two copies, keyed slot * 2 + the low bit of the
set's version. set_version[slot] is the set's state: the version in force, the seed its
elements hash with, the IPv4 prefix lengths its host entries have and whether its tries are
in use. A change writes the tries' spare copy and the host entries as of the next version,
then moves the version on: one array write, the moment every packet after it sees the whole
change and no packet sees part of it. A packet reads the state once and asks every table
about that version.

The old trie copy (the spare after the move) is brought level with the new one by the *next*
change, not right after it: a packet that read the version just before may still be walking
the old copy, and writing it then would show that packet a mix. The next change is a command
later, long after any such packet; it also kills the host entries of elements that left the
set. What levelling needs is recorded before the move (a Fix), so a command killed at any
step leaves the next one able to finish or undo it.

The host tables are sized at load for the sets' elements with room to spare; an element that
finds no place near its home goes into the tries instead, so a set grows as far as the
tries' cap either way.
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
from .hosttable import HostTable, address_words, new_seed

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
WIDTH = {4: 4, 6: 16}
FOREVER = shared.HOST_FOREVER
VERSION_MASK = 0xFFFFFFFF


def hosted(e: Element) -> bool:
    """An element of the host tables' kind: an IPv4 address or network, an IPv6 address.
    (IPv6 networks stay in the trie: a search per prefix length would be up to 128.)"""
    return e[0] == 4 or e[2] == 128


Span = tuple[int, int]  # a host entry's (since, until)


def held(span: Span | None, version: int) -> bool:
    """Whether a host entry's address is in the set at version (what in_set() asks)."""
    return span is not None and span[0] <= version < span[1]


def fill(fds: dict[str, int], sets: dict[str, CidrSet], slots: dict[str, int]) -> None:
    """Loads every set at version 0 into empty tables (a fresh generation's): its addresses
    and IPv4 networks into the host tables where they find a place, the rest into both trie
    copies.

    The trie elements go in in address order: the kernel's trie then inserts each next to
    the last one it touched, five times faster for a million prefixes than in a set's
    order. The second copy's keys are the first's with the slot field changed."""
    seeds = {name: new_seed() for name in sets}
    # One pass over each set (a million elements): the host tables' elements by family and
    # prefix length, the rest for the tries.
    hosts: dict[str, dict[tuple[int, int], list[int]]] = {}
    nets: dict[str, dict[int, list[Element]]] = {}
    for name, cset in sets.items():
        hosts[name], nets[name] = {}, {4: [], 6: []}
        for e in cset.elements:
            if hosted(e):
                hosts[name].setdefault((e[0], e[2]), []).append(e[1])
            else:
                nets[name][e[0]].append(e)
    for family, table in HOSTS.items():
        groups = [(name, plen) for name in sets for fam, plen in hosts[name] if fam == family]
        with HostTable(fds[table], family) as hosted_in:
            left = hosted_in.fill([(shared.host_tag(slots[name], plen), seeds[name],
                                    _key_words(hosts[name][family, plen], family, 0)) for name, plen in groups])
        for (name, plen), positions in zip(groups, left, strict=True):  # no place: into the trie
            nets[name][family] += [(family, hosts[name][family, plen][j], plen) for j in positions]
    for name in sets:
        slot = slots[name]
        for family, table in TRIES.items():
            words, values, n = _sorted_keys(nets[name][family], family)
            if not n:
                continue
            stride = len(words) // n  # u32 words a key: prefixlen, key slot, address
            for copy in (0, 1):
                words[1::stride] = array("I", [slot * 2 + copy]) * n
                _write_keys(fds[table], words.tobytes(), values, n)
        lengths4 = 0
        for family, plen in hosts[name]:
            if family == 4 and plen < 32:
                lengths4 |= 1 << plen
        tries = (shared.SET_TRIE4 if nets[name][4] else 0) | (shared.SET_TRIE6 if nets[name][6] else 0)
        libbpf.map_update(fds["set_version"], c_uint32(slot), shared.SetState(0, seeds[name], lengths4, tries))


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


def _key(key_slot: int, e: Element) -> ctypes.Structure:
    family, net, plen = e
    raw = net.to_bytes(WIDTH[family], "big")
    return KEYS[family](32 + plen, key_slot, (ctypes.c_uint8 * WIDTH[family])(*raw))


class SetTables:
    """The pinned set tables of the generation in force."""

    def __init__(self, directory: str | None, fds: dict[str, int] | None = None) -> None:
        """The tables pinned in directory, or (directory None) copies of the fds given."""
        self.fds: dict[str, int] = {}
        self.hosts: dict[int, HostTable] = {}
        try:
            if directory is None:
                self.fds = {name: os.dup(fd) for name, fd in (fds or {}).items()}
            else:
                for name in ("set4", "set6", "set_version", *HOSTS.values()):
                    self.fds[name] = libbpf.obj_get(os.path.join(directory, name))
            if libbpf.map_info(self.fds["set_version"]).value_size != ctypes.sizeof(shared.SetState):
                raise RuntimeFailure("the set tables in force were made by an older bpfwall: "
                                     "run `bpfwall apply` again to replace them")
            self.hosts = {family: HostTable(self.fds[name], family) for family, name in HOSTS.items()}
        except libbpf.BpfError as exc:
            self.close()
            raise RuntimeFailure(f"the set tables in {directory} are unreadable: {exc}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for table in self.hosts.values():
            table.close()
        for fd in self.fds.values():
            os.close(fd)
        self.fds, self.hosts = {}, {}

    def __enter__(self) -> SetTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state(self, slot: int) -> shared.SetState:
        value = shared.SetState()
        libbpf.map_lookup(self.fds["set_version"], c_uint32(slot), value)
        return value

    def version(self, slot: int) -> int:
        """The set's version in force (its trie copy: the low bit)."""
        return self.state(slot).version

    def _entry(self, slot: int, e: Element, seed: int) -> int | None:
        """The host entry of element e (dead or alive), if it has one (seed: the set's)."""
        if not hosted(e):
            return None
        return self.hosts[e[0]].find(shared.host_tag(slot, e[2]), seed, address_words(e[0], e[1]))

    def span(self, slot: int, e: Element, seed: int | None = None) -> Span | None:
        """The versions whose set holds element e by its host entry (None: it has none, or
        a killed one). seed: the set's, if the caller has read its state already."""
        i = self._entry(slot, e, self.state(slot).seed if seed is None else seed)
        if i is None:
            return None
        span = self.hosts[e[0]].span(i)
        return span if span[0] != span[1] else None

    def _set_span(self, slot: int, e: Element, seed: int, since: int, until: int) -> bool:
        """Writes e's host entry; False when its chain has no place for a new one."""
        return self.hosts[e[0]].put(shared.host_tag(slot, e[2]), seed, address_words(e[0], e[1]), since, until)

    def _drop_host(self, slot: int, e: Element, seed: int) -> None:
        i = self._entry(slot, e, seed)
        if i is not None:
            self.hosts[e[0]].kill(i)

    def contains(self, slot: int, e: Element, state: shared.SetState | None = None) -> bool:
        """Whether e itself (not only a prefix covering it) is an element of the set
        (state: the set's, if the caller has read it already)."""
        state = self.state(slot) if state is None else state
        v = state.version
        if held(self.span(slot, e, state.seed), v):
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
        state = self.state(slot)
        current, seed = state.version, state.seed
        spare_key = slot * 2 + 1 - (current & 1)
        adds, removes = fix.flipped  # the change itself
        moved = current == fix.version
        trie_adds, trie_removes = [], []
        for e in adds:
            span = self.span(slot, e, seed)
            if span is None:
                trie_adds.append(e)
            elif not moved and span[0] == fix.version:  # written for a version that never came
                self._drop_host(slot, e, seed)
        for e in removes:
            span = self.span(slot, e, seed)
            if span is None:
                trie_removes.append(e)
            elif moved and span[1] <= current:  # gone from the set: no packet reads it now
                self._drop_host(slot, e, seed)
            elif not moved and span[1] == fix.version:
                self._set_span(slot, e, seed, span[0], FOREVER)
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
        state = self.state(slot)
        new = (state.version + 1) & VERSION_MASK
        record(Fix(version=new, flipped=(add, remove), unflipped=(remove, add)))
        trie_adds, trie_removes = [], []
        lengths4, tries = state.lengths4, state.tries
        for e in add:
            if hosted(e) and self._set_span(slot, e, state.seed, new, FOREVER):
                if e[0] == 4 and e[2] < 32:
                    lengths4 |= 1 << e[2]
            else:
                tries |= shared.SET_TRIE4 if e[0] == 4 else shared.SET_TRIE6
                trie_adds.append(e)  # an IPv6 network, or no place in the host table
        for e in remove:
            span = self.span(slot, e, state.seed)
            if span is None:
                trie_removes.append(e)
            else:
                self._set_span(slot, e, state.seed, span[0], new)
        spare_key = slot * 2 + (new & 1)
        _write_trie(self.fds, spare_key, trie_adds)
        _delete_trie(self.fds, spare_key, trie_removes)
        if (lengths4, tries) != (state.lengths4, state.tries):
            # The searches the new version needs, in force before it: a packet reads the
            # state in one lookup, but a write of it may reach the packet half done.
            libbpf.map_update(self.fds["set_version"], c_uint32(slot),
                              shared.SetState(state.version, state.seed, lengths4, tries))
        libbpf.map_update(self.fds["set_version"], c_uint32(slot), shared.SetState(new, state.seed, lengths4, tries))

    def view(self, slot: int) -> PinnedSet:
        return PinnedSet(self, slot)

    def elements(self, slot: int, version: int | None = None) -> Iterator[Element]:
        """The set's elements at version (by default the one in force)."""
        v = self.version(slot) if version is None else version
        for family, table in self.hosts.items():
            for plen, words, since, until in table.entries_of(slot):
                if held((since, until), v):
                    yield (family, int.from_bytes(array("I", words).tobytes(), "big"), plen)
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
        """Whether an element holds addr, searched as in_set() does: the address, its IPv4
        network at each length the set has, then the trie."""
        bits = WIDTH[family] * 8
        a = int.from_bytes(addr[: WIDTH[family]], "big")
        state = self.tables.state(self.slot)
        v = state.version
        lengths = [bits] + ([p for p in range(31, -1, -1) if state.lengths4 >> p & 1] if family == 4 else [])
        if any(held(self.tables.span(self.slot, (family, a >> (bits - p) << (bits - p), p), state.seed), v)
               for p in lengths):
            return True
        value = c_uint32()
        key = _key(self.slot * 2 + (v & 1), (family, a, bits))
        return libbpf.map_lookup(self.tables.fds[TRIES[family]], key, value)


class ChangedSet:
    """A set in force as a change would leave it, asked as the reference model asks
    (contains): the lockout guard of `set add` and `set del` judges the host's SSH sessions
    by it before the change is made. A removal is taken at its worst: an address that a
    removed element holds counts as out of the set, even if another element holds it too."""

    def __init__(self, pinned: PinnedSet, elements: list[Element], add: bool) -> None:
        self.pinned, self.elements, self.add = pinned, elements, add

    def contains(self, family: int, addr: bytes) -> bool:
        bits = WIDTH[family] * 8
        a = int.from_bytes(addr[: WIDTH[family]], "big")
        hit = any(f == family and a >> (bits - p) == net >> (bits - p) for f, net, p in self.elements)
        if self.add:
            return hit or self.pinned.contains(family, addr)
        return not hit and self.pinned.contains(family, addr)
