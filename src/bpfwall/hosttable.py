"""A set host table (host4, host6): the single addresses of every CIDR set in one array,
each found by linear probing from the slot its hash names (in_set()'s host4_holds()).

An entry is (tag: the set's slot and the element's prefix length, address, since, until):
the element is in its set from version `since` until version `until`. The tables hold each
set's single addresses (/32, /128) and its IPv4 networks; a packet's search is one per
prefix length the set has. A search starts at the address's home slot and
stops at an entry never used (tag 0), at most shared.HOST_PROBES entries on; the array has
that many entries past the last home, so no search wraps. An entry is never emptied once
used, only killed (since == until), so that the entries after it stay reachable; a new
address may take a killed entry's place. An address is in a table once, dead or alive.

Written through a shared mapping of the array (BPF_F_MMAPABLE): a million addresses are one
copy in memory, and one address a few word stores. The stores of a new entry end with its
tag, and a killed entry is taken over only for an address not yet in force, so a packet
that reads an entry mid-write finds nothing that holds at its version.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from array import array
from collections.abc import Iterator, Sequence

from . import libbpf, shared
from .errors import RuntimeFailure

ENTRY = {4: shared.Host4Entry, 6: shared.Host6Entry}
# A dead span is (FOREVER, FOREVER), in unused entries too: the stores that turn it into a
# new entry's (since, FOREVER) show a packet, in whatever order it sees them, either span,
# and neither holds at the version in force, where (0, 0) could show (0, FOREVER).
EMPTY = {4: (0, 0, 0xFFFFFFFF, 0xFFFFFFFF), 6: (0, 0, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0)}
ADDR_WORDS = {4: 1, 6: 4}
PROBES = shared.HOST_PROBES
FOREVER = shared.HOST_FOREVER
M32 = 0xFFFFFFFF


def entries_for(addresses: int) -> int:
    """The array's size for room for `addresses`: twice as many home slots, which keeps a
    search to about two entries, and the probe tail."""
    return 2 * max(1, addresses) + PROBES


def address_words(family: int, net: int) -> tuple[int, ...]:
    """An address as the u32 words the data plane reads: its bytes in network order."""
    raw = net.to_bytes(4 * ADDR_WORDS[family], "big")
    return tuple(array("I", raw))


def address_hash(tag: int, seed: int, words: Sequence[int]) -> int:
    """in_set()'s hash: the seed and tag, then each address word mixed in by multiplication."""
    h = seed ^ (tag * shared.HOST_SLOT & M32)
    for w in words:
        h = (h ^ w) * shared.HOST_MIX & M32
    return h


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


class HostTable:
    """One host table, mapped. Close it (or use it as a context) to unmap."""

    def __init__(self, fd: int, family: int) -> None:
        info = libbpf.map_info(fd)
        value_size = ctypes.sizeof(ENTRY[family])
        size = (value_size + 7) // 8 * 8  # the kernel aligns an array's values to 8
        if (info.type != libbpf.BPF_MAP_TYPE_ARRAY or not info.map_flags & libbpf.BPF_F_MMAPABLE
                or info.value_size != value_size):
            raise RuntimeFailure("the set tables in force were made by an older bpfwall: "
                                 "run `bpfwall apply` again to replace them")
        self.family = family
        self.entries = info.max_entries
        self.homes = max(1, self.entries - PROBES)
        self.stride = size // 4  # u32 words an entry takes
        self.aw = ADDR_WORDS[family]
        self._map = mmap.mmap(fd, size * self.entries, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.words = memoryview(self._map).cast("I")

    def close(self) -> None:
        self.words.release()
        self._map.close()

    def __enter__(self) -> HostTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def home(self, tag: int, seed: int, words: Sequence[int]) -> int:
        return address_hash(tag, seed, words) * self.homes >> 32 if self.entries > PROBES else 0

    def _chain(self, tag: int, seed: int, words: Sequence[int]) -> Iterator[int]:
        """The entries a search for the address walks, up to the first never used."""
        at = self.home(tag, seed, words)
        for i in range(at, min(at + PROBES, self.entries)):
            if not self.words[i * self.stride]:
                return
            yield i

    def find(self, tag: int, seed: int, words: Sequence[int]) -> int | None:
        """The entry that has the address (dead or alive), or None."""
        w, aw = self.words, self.aw
        for i in self._chain(tag, seed, words):
            base = i * self.stride
            if w[base] == tag and tuple(w[base + 1 : base + 1 + aw]) == tuple(words):
                return i
        return None

    def span(self, i: int) -> tuple[int, int]:
        base = i * self.stride + 1 + self.aw
        return self.words[base], self.words[base + 1]

    def set_span(self, i: int, since: int, until: int) -> None:
        base = i * self.stride + 1 + self.aw
        self.words[base], self.words[base + 1] = since, until

    def kill(self, i: int) -> None:
        """The entry holds at no version; it keeps its place in its chain."""
        self.set_span(i, FOREVER, FOREVER)

    def put(self, tag: int, seed: int, words: Sequence[int], since: int, until: int) -> bool:
        """The address's span written, in a new entry if it has none: the first never used
        or killed entry of its chain. False when there is no such entry within the probes.
        A new address must not hold at the version in force (since: a later one)."""
        found = self.find(tag, seed, words)
        if found is not None:
            self.set_span(found, since, until)
            return True
        at = self.home(tag, seed, words)
        for i in range(at, min(at + PROBES, self.entries)):
            base = i * self.stride
            tail = base + 1 + self.aw
            if self.words[base] and self.words[tail] != self.words[tail + 1]:
                continue  # alive
            # The span first: a reader that matches the entry mid-write finds nothing held.
            self.words[tail], self.words[tail + 1] = since, until
            self.words[base + 1 : tail] = array("I", words)
            self.words[base] = tag
            return True
        return False

    def fill(self, groups: list[tuple[int, int, array]]) -> list[list[int]]:
        """Sets' elements into an empty table, in force from version 0, in groups of one
        tag (set and prefix length): its tag, its set's seed, and the networks
        (address_words() of each, one after another). Returns, per group, the positions of
        those that found no place (for the trie).

        Placed in order of home slot, each at the first slot after the last one taken: the
        layout that inserting them one by one gives, in one sweep and one copy."""
        aw, stride, homes = self.aw, self.stride, self.homes
        # One int an element, sorted: home << 40 | group << 24 | its position in the group.
        keys: list[int] = []
        for g, (tag, seed, words) in enumerate(groups):
            n = len(words) // aw
            if n > 1 << 24 or g >= 1 << 16:
                raise ValueError("more than 2**24 elements in a group, or 2**16 groups")
            if aw == 1:  # address_hash() inline: a million calls cost a second
                mix = seed ^ (tag * shared.HOST_SLOT & M32)
                hashes = [(mix ^ w) * shared.HOST_MIX & M32 for w in words]
            else:
                hashes = [address_hash(tag, seed, words[j * aw : (j + 1) * aw]) for j in range(n)]
            keys += [(h * homes >> 32) << 40 | g << 24 | j for j, h in enumerate(hashes)]
        keys.sort()
        image = array("I", EMPTY[self.family]) * self.entries
        overflow: list[list[int]] = [[] for _ in groups]
        tags = [tag for tag, _, _ in groups]
        columns = [words for _, _, words in groups]
        nxt = 0
        for key in keys:
            home = key >> 40
            at = home if home > nxt else nxt
            if at - home >= PROBES:
                overflow[key >> 24 & 0xFFFF].append(key & 0xFFFFFF)
                continue
            g, j = key >> 24 & 0xFFFF, key & 0xFFFFFF
            base = at * stride
            image[base] = tags[g]
            if aw == 1:
                image[base + 1] = columns[g][j]
            else:
                image[base + 1 : base + 1 + aw] = columns[g][j * aw : (j + 1) * aw]
            image[base + 1 + aw] = 0  # since version 0, until FOREVER
            nxt = at + 1
        self.words[:] = image
        return overflow

    def entries_of(self, slot: int) -> Iterator[tuple[int, tuple[int, ...], int, int]]:
        """(prefix length, words, since, until) of every entry of the set in slot."""
        snapshot = array("I", self.words.tobytes())
        stride, aw, low = self.stride, self.aw, shared.host_tag(slot, 0)
        for i, t in enumerate(snapshot[0::stride]):
            if t & 0xFF == low:
                base = i * stride
                yield (t >> 8, tuple(snapshot[base + 1 : base + 1 + aw]), snapshot[base + 1 + aw],
                       snapshot[base + 2 + aw])
