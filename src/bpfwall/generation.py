"""One generation: a freshly loaded copy of the BPF object with its rule tables filled.

Each apply loads a new generation and swaps it onto the interfaces' links,
so the tables a packet reads always belong to one rule set.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
from array import array
from ctypes import c_uint8, c_uint32, sizeof

from . import access, libbpf, shared
from .compiler import Compiled
from .errors import RuntimeFailure
from .maps import BPFWALL_MAPS, PINNED_MAPS, SET_MAPS
from .ruleset import Network

PROGRAMS = {"ingress": "bpfwall_ingress", "egress": "bpfwall_egress"}
# A cap, not an allocation: the set tries allocate per element.
SET_CAPACITY = 1 << 24


def object_path() -> str:
    """The compiled data plane: $BPFWALL_OBJECT, else the copy shipped in the package."""
    path = os.environ.get("BPFWALL_OBJECT") or os.path.join(
        os.path.dirname(__file__), "bpf", "bpfwall.bpf.o"
    )
    if not os.path.exists(path):
        raise RuntimeFailure(f"BPF object {path} is missing: run 'make build'")
    return path


class Generation:
    def __init__(self, prog_fd: int, map_fds: dict[str, int], obj: libbpf.BpfObject | None = None,
                 direction: str = "ingress"):
        self.direction = direction
        self.prog_fd = prog_fd
        self.map_fds = map_fds
        self._obj = obj
        self._ncpus = libbpf.num_possible_cpus()

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, compiled: Compiled, ifindexes: dict[str, int] | None = None,
             ct_fds: dict[str, int] | None = None, set_fds: dict[str, int] | None = None,
             log_fds: dict[str, int] | None = None, iface_slots: dict[int, int] | None = None) -> Generation:
        """Loads the object's program for compiled.direction, sized for `compiled`, and fills its tables.

        ifindexes maps the interface names that rules mention to their index
        in the namespace the program will run in; names absent from it never match.
        ct_fds are the scope's connection table maps to share; without them the
        generation gets tables of its own (map_fds has them, for pinning).
        set_fds are the set tables of the other direction of this generation, to share;
        log_fds the scope's log ring; iface_slots maps the ifindex of each
        protected interface to its block of counters and shared.IFACE_* flags.
        """
        obj = libbpf.BpfObject(object_path())
        try:
            for direction, prog in PROGRAMS.items():
                obj.set_autoload(prog, direction == compiled.direction)
            obj.set_max_entries("conntrack", compiled.ct_max_entries)
            for name, fd in (ct_fds or {}).items():
                obj.reuse_map(name, fd)
            for name in ("set4", "set6"):
                obj.set_max_entries(name, SET_CAPACITY)
            for name, fd in {**(set_fds or {}), **(log_fds or {})}.items():
                obj.reuse_map(name, fd)
            # LRU tables are allocated whole: keep the ones a rule set does not use tiny.
            # Per-source limits and the reject budget's per-source buckets share one table.
            per_source = any(p.flags & shared.LIMIT_PER_SOURCE for p in compiled.params) or (
                compiled.config.reject_source_cost_ns and any(r.action == "reject" for r in compiled.rules))
            obj.set_max_entries("source_tat", shared.SOURCE_BUCKETS if per_source else 1)
            if not log_fds:  # the scope's tables are made here: sized for this rule set
                scans = bool(compiled.config.scan_ports)
                obj.set_max_entries("bans", shared.MAX_BANS if compiled.bans_by_rules() else 1)
                obj.set_max_entries("scan_bans", shared.MAX_BANS if scans else 1)
                obj.set_max_entries("scan_sources", shared.SCAN_SOURCES if scans else 1)
            obj.set_variable(".rodata", "cfg", bytes(compiled.config))
            obj.set_value_size("bitvectors", (compiled.n_summary + compiled.n_words) * 8)
            obj.set_value_size("rule_allow", (compiled.n_summary + compiled.n_words) * 8)
            obj.set_max_entries("bitvectors", max(1, compiled.n_classes))
            for name in ("src6", "dst6"):
                obj.set_max_entries(name, max(1, len(compiled.tries[name])))
            # Block 0, and one per protected interface that has a block of its own.
            n_blocks = 1 + max((v & shared.IFACE_BLOCK_MASK for v in (iface_slots or {}).values()), default=0)
            obj.set_max_entries("counters", shared.N_COUNTERS * n_blocks)
            obj.set_max_entries("dir_chunks", max(256, len(compiled.dir_chunks)))
            obj.set_max_entries("iface_class", max(1, len(compiled.iface_classes)))
            obj.set_max_entries("never_ban", max(1, len(compiled.never_ban)))
            try:
                obj.load()
            except libbpf.BpfError as exc:
                tail = "\n".join(exc.log.strip().splitlines()[-12:])
                raise RuntimeFailure(f"the kernel refused the data plane: {exc}\n{tail}") from None
            gen = cls(obj.prog_fd(PROGRAMS[compiled.direction]), {}, obj, compiled.direction)
            for name in (m.name for m in BPFWALL_MAPS):
                gen.map_fds[name] = obj.map_fd(name)
            gen._fill(compiled, ifindexes or {})
            for ifindex, value in (iface_slots or {}).items():
                if ifindex < shared.IFINDEX_SLOTS:
                    libbpf.map_update(gen.map_fds["iface_slot"], c_uint32(ifindex), c_uint32(value))
            return gen
        except BaseException:
            obj.close()
            raise

    def _fill(self, c: Compiled, ifindexes: dict[str, int]) -> None:
        n = shared.CLASS_SLOTS
        keys = (c_uint32 * n)(*range(n))
        values = (c_uint32 * n).from_buffer_copy(c.class_of.tobytes())
        libbpf.map_update_batch(self.map_fds["class_of"], keys, values, n)

        n = c.n_classes
        vsize = (c.n_summary + c.n_words) * 8
        keys = (c_uint32 * n)(*range(n))
        values = (c_uint8 * (n * vsize)).from_buffer_copy(c.bitvector_bytes())
        libbpf.map_update_batch(self.map_fds["bitvectors"], keys, values, n)

        for name, table in (("dir_l1", c.dir_l1), ("dir_chunks", c.dir_chunks)):
            n = len(table)
            if n:
                keys = (c_uint32 * n)(*range(n))
                values = (c_uint32 * n).from_buffer_copy(table.tobytes())
                libbpf.map_update_batch(self.map_fds[name], keys, values, n)
        for name in ("src6", "dst6"):
            fd = self.map_fds[name]
            for net, cid in c.tries[name]:
                libbpf.map_update(fd, _lpm_key(net), c_uint32(cid))

        for ifname, cid in c.iface_classes.items():
            if ifname in ifindexes:
                libbpf.map_update(self.map_fds["iface_class"], c_uint32(ifindexes[ifname]), c_uint32(cid))

        if c.config.log_enabled:
            for i, st in enumerate(c.log_states()):
                if st.interval_ns:
                    libbpf.map_update(self.map_fds["log_state"], c_uint32(i), st)

        # Every rule allowed on every CPU; a search clears only what a limit refuses.
        allow = (c_uint8 * ((c.n_summary + c.n_words) * 8 * self._ncpus))()
        ctypes.memset(allow, 0xFF, ctypes.sizeof(allow))
        libbpf.map_update(self.map_fds["rule_allow"], c_uint32(0), allow)
        for i, prm in enumerate(c.params):
            libbpf.map_update(self.map_fds["rule_params"], c_uint32(i), prm)
        for port in c.syn_ports:
            libbpf.map_update(self.map_fds["syn_ports"], c_uint32(port), ctypes.c_uint64(0))
        for net in c.never_ban:  # IPv4 as IPv4-mapped IPv6, as never_banned() looks it up
            mapped = net if net.version == 6 else ipaddress.ip_network(
                f"::ffff:{net.network_address}/{96 + net.prefixlen}")
            libbpf.map_update(self.map_fds["never_ban"], _lpm_key(mapped), ctypes.c_uint8(1))

        n = len(c.actions)
        if n:
            keys = (c_uint32 * n)(*range(n))
            values = (c_uint32 * n)(*c.actions)
            libbpf.map_update_batch(self.map_fds["rule_action"], keys, values, n)

    def set_fds(self) -> dict[str, int]:
        """The CIDR set tables, to share with the other direction and to fill."""
        return {name: self.map_fds[name] for name in SET_MAPS}

    # --- pinning ---------------------------------------------------------------------------

    def pin(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        libbpf.obj_pin(self.prog_fd, os.path.join(directory, "prog"))
        for name in PINNED_MAPS:
            libbpf.obj_pin(self.map_fds[name], os.path.join(directory, name))

    @classmethod
    def open_pinned(cls, directory: str, read_only: bool = False) -> Generation:
        """The pinned generation. read_only: its readable maps, opened read-only, and no
        program (prog_fd -1): what a reader of the rule file's group may open."""
        direction = os.path.basename(directory)
        names = access.READ_GENERATION if read_only else PINNED_MAPS
        fds: list[int] = []
        try:
            prog_fd = -1 if read_only else libbpf.obj_get(os.path.join(directory, "prog"))
            fds.append(prog_fd)
            maps = {}
            for name in names:
                maps[name] = libbpf.obj_get(os.path.join(directory, name), read_only)
                fds.append(maps[name])
        except BaseException:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            raise
        return cls(prog_fd, maps, direction=direction)

    def close(self) -> None:
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        else:
            for fd in [self.prog_fd, *self.map_fds.values()]:
                if fd >= 0:
                    os.close(fd)
        self.map_fds = {}

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------

    def counters(self, blocks: int = shared.MAX_IFACES) -> list[tuple[int, int]]:
        """(packets, bytes) per counter slot, summed over CPUs and the first `blocks`
        interface blocks (all by default; 1 for what test runs on ifindex 0 or 1 count)."""
        per_block = self.counter_blocks(blocks)
        return [(sum(p for p, _ in t), sum(b for _, b in t)) for t in zip(*per_block, strict=True)]

    def counter_blocks(self, blocks: int = 1) -> list[list[tuple[int, int]]]:
        """(packets, bytes) per counter slot, summed over CPUs, for the first `blocks`
        interface blocks (block 0: interfaces not of the apply)."""
        allocated = libbpf.map_info(self.map_fds["counters"]).max_entries // shared.N_COUNTERS
        n = shared.N_COUNTERS * min(blocks, allocated)
        keys = (c_uint32 * n)()
        values = (shared.Counter * (n * self._ncpus))()
        got = libbpf.map_lookup_batch(self.map_fds["counters"], None, ctypes.byref(c_uint32()), keys, values, n)
        # Summed as flat arrays: a Python loop over 16,390 slots x CPUs x blocks is too slow.
        raw = array("Q", bytes(values)[: got * self._ncpus * ctypes.sizeof(shared.Counter)])
        stride = 2 * self._ncpus
        packets = [sum(t) for t in zip(*(raw[2 * c :: stride] for c in range(self._ncpus)), strict=True)]
        nbytes = [sum(t) for t in zip(*(raw[2 * c + 1 :: stride] for c in range(self._ncpus)), strict=True)]
        flat = list(zip(packets, nbytes, strict=True)) + [(0, 0)] * (shared.N_COUNTERS * blocks - got)
        return [flat[b * shared.N_COUNTERS : (b + 1) * shared.N_COUNTERS] for b in range(blocks)]

    def set_clock(self, now_ns: int) -> None:
        """Test hook: limits, bans and scans read now_ns as the time (0: the real clock)."""
        libbpf.map_update(self.map_fds["test_clock"], c_uint32(0), ctypes.c_uint64(now_ns))

    def test_run(self, packet: bytes, ifindex: int = 0, repeat: int = 1) -> tuple[int, bytes, int]:
        """Runs packet as traffic (it is counted): (verdict, frame out, mean ns per run).

        Ingress returns the XDP verdict; egress the tcx one (-1 next/pass, 2 drop)
        and no frame.
        """
        if self.direction == "egress":
            verdict, ns = libbpf.test_run_skb(self.prog_fd, packet, repeat)
            return verdict, b"", ns
        verdict, _, out, ns = libbpf.test_run_xdp(self.prog_fd, packet, ifindex, repeat)
        return verdict, out, ns

    def judge(self, packet: bytes, ifindex: int = 0, traffic: bool = False) -> tuple[int, shared.Explain, bytes]:
        """Runs packet marked for explanation: not counted, and it changes no state,
        unless traffic is set (then it is traffic that still reports its decision).

        Returns (XDP verdict, what decided it, frame out). ifindex 0 means the
        loopback device of the current network namespace.
        """
        magic = shared.TRACE_MAGIC if traffic else shared.EXPLAIN_MAGIC
        mark = shared.Explain(magic=magic, rule=shared.NO_RULE)
        verdict, meta, out, _ = libbpf.test_run_xdp(self.prog_fd, packet, ifindex, 1, bytes(mark))
        if len(meta) != sizeof(shared.Explain):
            raise RuntimeFailure("the kernel returned no XDP metadata from the test run")
        return verdict, shared.Explain.from_buffer_copy(meta), out


def _lpm_key(net: Network) -> ctypes.Structure:
    """The key of an IPv6 trie entry (IPv4 prefixes go into the DIR tables)."""
    return shared.Lpm6Key(net.prefixlen, (c_uint8 * 16)(*net.network_address.packed))
