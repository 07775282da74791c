"""One generation: a freshly loaded copy of the BPF object with its rule tables filled.

Each apply loads a new generation and swaps it onto the interfaces' links,
so the tables a packet reads always belong to one rule set.
"""

from __future__ import annotations

import ctypes
import ipaddress
import mmap
import os
from array import array
from ctypes import c_uint8, c_uint32, sizeof
from typing import Any

from . import access, libbpf, owners, shared
from .compiler import Compiled, judges_connections
from .errors import RuntimeFailure
from .hosttable import entries_for
from .maps import BPFWALL_MAPS, CT_MAPS, GENERATION, PINNED_MAPS, SCOPE_MAPS, SET_MAPS, names
from .ruleset import Network
from .setmaps import HOSTS

PROGRAMS = {"ingress": "bpfwall_ingress", "egress": "bpfwall_egress"}
# The cgroup tracepoint programs an egress generation whose rules name cgroups runs beside its
# program, each pinned as a link in the generation's directory under its name.
CGROUP_WATCHERS = ("bpfwall_cgroup_mkdir", "bpfwall_cgroup_rmdir")
# The cgroup connect and sendmsg programs an egress generation that judges connections
# (compiler.judges_connections) has beside its program, for the dispatcher's hooks; each
# pinned in the generation's directory under its hook's name.
SOCKADDR_PROGRAMS = {hook: f"bpfwall_{hook}" for hook in ("connect4", "connect6", "sendmsg4", "sendmsg6")}
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
        self.watch_fds: dict[str, int] = {}  # CGROUP_WATCHERS' links, while this object owns them
        self.hook_fds: dict[str, int] = {}  # SOCKADDR_PROGRAMS by hook, when it has them
        self._ncpus = libbpf.num_possible_cpus()
        self.shape: dict[str, Any] = {}  # what load fixed (layout, capacities, shared tables)

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, compiled: Compiled, ifindexes: dict[str, int] | None = None,
             ct_fds: dict[str, int] | None = None, set_fds: dict[str, int] | None = None,
             log_fds: dict[str, int] | None = None, iface_slots: dict[int, int] | None = None,
             generation: int = 0, prog_flags_off: int = 0) -> Generation:
        """Loads the object's program for compiled.direction, sized for `compiled`, and fills its tables.

        ifindexes maps the interface names that rules mention to their index
        in the namespace the program will run in; names absent from it never match.
        ct_fds are the scope's connection table maps to share; without them the
        generation gets tables of its own (map_fds has them, for pinning).
        set_fds are the set tables of the other direction of this generation, to share;
        log_fds the scope's log ring; iface_slots maps the ifindex of each
        protected interface to its block of counters and shared.IFACE_* flags.
        generation: the number log records and bans name.

        The tables get room to grow (spare()): a later rule set whose layout fits
        (fits()) can be put into this program's tables by refill(), with no new load.
        prog_flags_off: load flags taken off the program (bench/jumbo.py compares it without
        BPF_F_XDP_HAS_FRAGS).
        """
        want = layout(compiled, iface_slots or {}, log_fds)
        obj = libbpf.BpfObject(object_path())
        try:
            for direction, prog in PROGRAMS.items():
                obj.set_autoload(prog, direction == compiled.direction)
            if prog_flags_off:
                obj.clear_prog_flags(PROGRAMS[compiled.direction], prog_flags_off)
            for prog in CGROUP_WATCHERS:
                obj.set_autoload(prog, bool(compiled.cgroup_classes))
            for prog in SOCKADDR_PROGRAMS.values():
                obj.set_autoload(prog, judges_connections(compiled.config))
            for name, fd in {**(ct_fds or {}), **(set_fds or {}), **(log_fds or {})}.items():
                obj.reuse_map(name, fd)
            for name, n in want["fixed"]["sizes"].items():
                obj.set_max_entries(name, n)
            capacity = {name: spare(n) for name, n in want["needs"].items()}
            for name, n in capacity.items():
                # A host table's capacity counts elements; its array has more slots (entries_for).
                obj.set_max_entries(name, entries_for(n) if name in HOSTS.values() else n)
            obj.set_variable(".rodata", "cfg", bytes(compiled.config))
            obj.set_value_size("bitvectors", want["fixed"]["bitvector_bytes"])
            obj.set_value_size("rule_allow", want["fixed"]["bitvector_bytes"])
            try:
                obj.load()
            except libbpf.BpfError as exc:
                tail = "\n".join(exc.log.strip().splitlines()[-12:])
                raise RuntimeFailure(f"the kernel refused the data plane: {exc}\n{tail}") from None
            gen = cls(obj.prog_fd(PROGRAMS[compiled.direction]), {}, obj, compiled.direction)
            if judges_connections(compiled.config):
                gen.hook_fds = {hook: obj.prog_fd(prog) for hook, prog in SOCKADDR_PROGRAMS.items()}
            for name in (m.name for m in BPFWALL_MAPS):
                gen.map_fds[name] = obj.map_fd(name)
            gen.map_fds[GENERATION_NO] = obj.map_fd(".bss")
            gen.shape = {"fixed": want["fixed"], "capacity": capacity,
                         "shared": shared_ids({n: gen.map_fds[n] for n in scope_tables(compiled)})}
            if compiled.cgroup_classes:  # watching before _fill looks: no cgroup slips between
                for prog in CGROUP_WATCHERS:
                    gen.watch_fds[prog] = libbpf.raw_tracepoint_open(obj.prog_fd(prog))
            gen._fill(compiled, ifindexes or {})
            gen._write_iface_slots(iface_slots or {})
            gen.set_generation(generation)
            return gen
        except BaseException:
            obj.close()
            raise

    def refill(self, compiled: Compiled, ifindexes: dict[str, int], iface_slots: dict[int, int],
               generation: int, sets: bool = False) -> None:
        """Puts another rule set of a fitting layout into this loaded program's tables, as a
        fresh load of it would have them: every table emptied, then filled. Only for a
        program no packet runs (the dispatcher's idle slot). sets: empty the CIDR set
        tables too (the generation's own; the caller fills them)."""
        for name in (*GENERATION_TABLES, *PINNED_MAPS, *(SET_MAPS if sets else ())):
            if name not in OVERWRITTEN:
                empty(self.map_fds[name], self._ncpus)
        self._fill(compiled, ifindexes)
        self._write_iface_slots(iface_slots)
        self.set_generation(generation)

    def judge_connections_in(self, netns_cookie: int, local: list[bytes]) -> None:
        """Where the connect and sendmsg programs judge: the namespace of netns_cookie
        (0: nowhere), whose own addresses (16 bytes each, IPv4 mapped) are local."""
        for addr in local[: LOCAL_ADDRS_MAX]:
            libbpf.map_update(self.map_fds["local_addrs"], shared.Addr16((c_uint8 * 16)(*addr)), c_uint8(1))
        libbpf.map_update(self.map_fds["connect_scope"], c_uint32(0), shared.ConnectScope(netns_cookie))

    def set_generation(self, generation: int) -> None:
        libbpf.map_update(self.map_fds[GENERATION_NO], c_uint32(0), c_uint32(generation))

    def _write_iface_slots(self, iface_slots: dict[int, int]) -> None:
        for ifindex, value in iface_slots.items():
            if ifindex < shared.IFINDEX_SLOTS:
                libbpf.map_update(self.map_fds["iface_slot"], c_uint32(ifindex), c_uint32(value))

    def _fill(self, c: Compiled, ifindexes: dict[str, int]) -> None:
        write_array(self.map_fds["class_of"], c.class_of.tobytes(), 4)
        write_array(self.map_fds["bitvectors"], c.bitvector_bytes(), (c.n_summary + c.n_words) * 8)
        write_array(self.map_fds["dir_l1"], c.dir_l1.tobytes(), 4)
        write_array(self.map_fds["dir_chunks"], c.dir_chunks.tobytes(), 4)
        for name in ("src6", "dst6"):
            fd = self.map_fds[name]
            for net, cid in c.tries[name]:
                libbpf.map_update(fd, _lpm_key(net), c_uint32(cid))

        for ifname, cid in c.iface_classes.items():
            if ifname in ifindexes:
                libbpf.map_update(self.map_fds["iface_class"], c_uint32(ifindexes[ifname]), c_uint32(cid))
        if c.cgroup_classes:
            # The paths first: from here the tracepoints give a new cgroup its class, and what
            # existed before is found by the look below (both agree on a cgroup made between).
            for path, cid in c.cgroup_classes.items():
                libbpf.map_update(self.map_fds["cgroup_wanted"], shared.CgroupPath.of(path), c_uint32(cid))
            mount = owners.cgroup2_mount()
            for path, cid in c.cgroup_classes.items():
                ino = owners.cgroup_id(path, mount)
                if ino is not None:
                    libbpf.map_update(self.map_fds["cgroup_class"], ctypes.c_uint64(ino), c_uint32(cid))
        for uid, cid in c.user_classes.items():
            libbpf.map_update(self.map_fds["user_class"], c_uint32(uid), c_uint32(cid))

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

        write_array(self.map_fds["rule_action"], array("I", c.actions).tobytes(), 4)

    def set_fds(self) -> dict[str, int]:
        """The CIDR set tables, to share with the other direction and to fill."""
        return {name: self.map_fds[name] for name in SET_MAPS}

    # --- pinning ---------------------------------------------------------------------------

    def pin(self, directory: str) -> None:
        """The program and every table of this direction: readers open the counters and
        log bookkeeping; a later apply whose layout fits opens the rest to refill them."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        libbpf.obj_pin(self.prog_fd, os.path.join(directory, "prog"))
        for hook, fd in self.hook_fds.items():
            libbpf.obj_pin(fd, os.path.join(directory, hook))
        for name in (*PINNED_MAPS, *GENERATION_TABLES, GENERATION_NO):
            libbpf.obj_pin(self.map_fds[name], os.path.join(directory, name))
        for name, fd in self.watch_fds.items():  # the pins keep them running once we close
            libbpf.obj_pin(fd, os.path.join(directory, name))

    @classmethod
    def open_pinned(cls, directory: str, read_only: bool = False) -> Generation:
        """The pinned generation. read_only: its readable maps, opened read-only, and no
        program (prog_fd -1): what a reader of the rule file's group may open."""
        return cls._open(directory, access.READ_GENERATION if read_only else PINNED_MAPS, read_only)

    @classmethod
    def open_for_refill(cls, directory: str, set_dir: str) -> Generation:
        """The pinned generation with every table, for refill(): the program and its own
        tables from directory, the set tables it shares from set_dir."""
        gen = cls._open(directory, (*PINNED_MAPS, *GENERATION_TABLES, GENERATION_NO), False)
        try:
            for name in SET_MAPS:
                gen.map_fds[name] = libbpf.obj_get(os.path.join(set_dir, name))
        except BaseException:
            gen.close()
            raise
        return gen

    @classmethod
    def _open(cls, directory: str, names: tuple[str, ...], read_only: bool) -> Generation:
        direction = os.path.basename(directory)
        fds: list[int] = []
        try:
            prog_fd = -1 if read_only else libbpf.obj_get(os.path.join(directory, "prog"))
            fds.append(prog_fd)
            maps = {}
            for name in names:
                maps[name] = libbpf.obj_get(os.path.join(directory, name), read_only)
                fds.append(maps[name])
            hooks = {}
            if not read_only:
                for hook in SOCKADDR_PROGRAMS:
                    path = os.path.join(directory, hook)
                    if os.path.exists(path):
                        hooks[hook] = libbpf.obj_get(path)
                        fds.append(hooks[hook])
        except BaseException:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            raise
        gen = cls(prog_fd, maps, direction=direction)
        gen.hook_fds = hooks
        return gen

    def close(self) -> None:
        for fd in self.watch_fds.values():
            os.close(fd)
        self.watch_fds = {}
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        else:
            for fd in [self.prog_fd, *self.map_fds.values(), *self.hook_fds.values()]:
                if fd >= 0:
                    os.close(fd)
        self.map_fds, self.hook_fds = {}, {}

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

    def counter_blocks(self, blocks: int = 1, rules: int = shared.MAX_RULES) -> list[list[tuple[int, int]]]:
        """(packets, bytes) per counter slot, summed over CPUs, for the first `blocks`
        interface blocks (block 0: interfaces not of the apply). rules: how many rule slots
        the rule set uses; the rest read as zero (a rule set of 3 rules need not read and sum
        16,384 slots a block)."""
        allocated = libbpf.map_info(self.map_fds["counters"]).max_entries // shared.N_COUNTERS
        rules = min(rules, shared.MAX_RULES)
        gap = [(0, 0)] * (shared.MAX_RULES - rules)
        out = []
        for b in range(blocks):
            if b >= allocated:
                out.append([(0, 0)] * shared.N_COUNTERS)
                continue
            base = b * shared.N_COUNTERS
            out.append(self._counter_range(base, rules) + gap
                       + self._counter_range(base + shared.MAX_RULES, shared.N_COUNTERS - shared.MAX_RULES))
        return out

    def _counter_range(self, start: int, n: int) -> list[tuple[int, int]]:
        """(packets, bytes) of counter slots start..start+n-1, summed over CPUs."""
        if n <= 0:
            return []
        keys = (c_uint32 * n)()
        values = (shared.Counter * (n * self._ncpus))()
        # An array's batch walk starts after the key given (the last one of a previous step).
        after = ctypes.byref(c_uint32(start - 1)) if start else None
        got = libbpf.map_lookup_batch(self.map_fds["counters"], after, ctypes.byref(c_uint32()), keys, values, n)
        # Summed as flat arrays: a Python loop over slots x CPUs is too slow at 16,396 slots.
        raw = array("Q", bytes(values)[: got * self._ncpus * ctypes.sizeof(shared.Counter)])
        stride = 2 * self._ncpus
        packets = [sum(t) for t in zip(*(raw[2 * c :: stride] for c in range(self._ncpus)), strict=True)]
        nbytes = [sum(t) for t in zip(*(raw[2 * c + 1 :: stride] for c in range(self._ncpus)), strict=True)]
        return list(zip(packets, nbytes, strict=True)) + [(0, 0)] * (n - got)

    def set_clock(self, now_ns: int) -> None:
        """Test hook: limits, bans and scans read now_ns as the time (0: the real clock)."""
        libbpf.map_update(self.map_fds["test_clock"], c_uint32(0), ctypes.c_uint64(now_ns))

    def test_run(self, packet: bytes, ifindex: int = 0, repeat: int = 1,
                 skb_ctx: bytes = b"") -> tuple[int, bytes, int]:
        """Runs packet as traffic (it is counted): (verdict, frame out, mean ns per run).
        skb_ctx (egress): see shared.skb_run_ctx.

        Ingress returns the XDP verdict; egress the tcx one (-1 next/pass, 2 drop)
        and no frame.
        """
        if self.direction == "egress":
            verdict, ns = libbpf.test_run_skb(self.prog_fd, packet, repeat, skb_ctx)
            return verdict, b"", ns
        verdict, _, out, ns = libbpf.test_run_xdp(self.prog_fd, packet, ifindex, repeat)
        return verdict, out, ns

    def judge_egress(self, packet: bytes, ifindex: int, uid: int | None) -> tuple[int, shared.Explain]:
        """Runs packet through bpfwall_egress marked for explanation (nothing counted, no state
        changed) as sent by a socket of uid in the caller's cgroup, or by none (uid None).
        Returns (tcx verdict, what decided it)."""
        verdict, _, ctx = libbpf.test_run_skb_ctx(self.prog_fd, packet, 1,
                                                  shared.skb_run_ctx(uid, explain=True, ifindex=ifindex))
        return verdict, shared.explained_skb(ctx)

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


# Tables of a generation that only its program reads (pinned too, for refill), and the
# .bss map that holds the number the generation runs under.
GENERATION_TABLES = names(GENERATION)
GENERATION_NO = "generation_no"
LOCAL_ADDRS_MAX = 1024  # local_addrs' size (bpf/sockaddr.h)
# Tables _fill() writes whole (or whose entries past the rule set's own are never read):
# refill() does not empty them first.
OVERWRITTEN = frozenset({"class_of", "bitvectors", "dir_l1", "dir_chunks", "rule_action", "rule_allow"})
_ARRAYS = {libbpf.BPF_MAP_TYPE_ARRAY, libbpf.BPF_MAP_TYPE_PERCPU_ARRAY}
_PER_CPU = {libbpf.BPF_MAP_TYPE_PERCPU_ARRAY}


def spare(n: int) -> int:
    """A table's size for n entries with room to grow: a sixteenth more (at least 64),
    in multiples of 64, so that adding a rule or two keeps the loaded program."""
    return -(-(n + max(64, n // 16)) // 64) * 64


def layout(compiled: Compiled, iface_slots: dict[int, int], log_fds: dict[str, int] | None) -> dict[str, Any]:
    """What a load of compiled fixes ("fixed": the program's constants, the rule bitvector's
    width, the sizes that must match) and what its tables must hold ("needs")."""
    cfg = bytes(compiled.config)
    # LRU tables are allocated whole: keep the ones a rule set does not use tiny.
    # Per-source limits and the reject budget's per-source buckets share one table.
    per_source = any(p.flags & shared.LIMIT_PER_SOURCE for p in compiled.params) or (
        compiled.config.reject_source_cost_ns and any(r.action == "reject" for r in compiled.rules))
    # Block 0, and one per protected interface that has a block of its own.
    n_blocks = 1 + max((v & shared.IFACE_BLOCK_MASK for v in iface_slots.values()), default=0)
    sizes = {"conntrack": compiled.ct_max_entries, "set4": SET_CAPACITY, "set6": SET_CAPACITY,
             "source_tat": shared.SOURCE_BUCKETS if per_source else 1,
             "counters": shared.N_COUNTERS * n_blocks}
    if not log_fds:  # the scope's tables are made here: sized for this rule set
        scans = bool(compiled.config.scan_ports)
        sizes.update(bans=shared.MAX_BANS if compiled.bans_by_rules() else 1,
                     scan_bans=shared.MAX_BANS if scans else 1,
                     scan_sources=shared.SCAN_SOURCES if scans else 1)
    fixed = {"direction": compiled.direction, "cfg": cfg.hex(), "sizes": sizes,
             "bitvector_bytes": (compiled.n_summary + compiled.n_words) * 8}
    needs = {"bitvectors": max(1, compiled.n_classes), "src6": max(1, len(compiled.tries["src6"])),
             "dst6": max(1, len(compiled.tries["dst6"])), "dir_chunks": max(256, len(compiled.dir_chunks)),
             "iface_class": max(1, len(compiled.iface_classes)), "never_ban": max(1, len(compiled.never_ban)),
             "cgroup_class": max(1, len(compiled.cgroup_classes)),
             "cgroup_wanted": max(1, len(compiled.cgroup_classes)), "user_class": max(1, len(compiled.user_classes)),
             # the sets' single addresses (more go into the tries)
             "host4": max(1, compiled.hosts.get(4, 0)), "host6": max(1, compiled.hosts.get(6, 0))}
    return {"fixed": fixed, "needs": needs}


def fits(shape: dict[str, Any], want: dict[str, Any], shared_now: dict[str, int]) -> bool:
    """Whether a loaded program of this shape can run a rule set of layout want: the same
    constants and fixed sizes, room for its tables, and the scope's shared tables (the
    connection table, the log ring, the ban tables) still the ones it was loaded with.
    The scope's own sizes only matter where the scope's tables are made."""
    fixed = dict(want["fixed"], sizes={k: v for k, v in want["fixed"]["sizes"].items()
                                       if k not in ("bans", "scan_bans", "scan_sources")})
    have = dict(shape.get("fixed", {}))
    have["sizes"] = {k: v for k, v in have.get("sizes", {}).items() if k not in ("bans", "scan_bans", "scan_sources")}
    if have != fixed or shape.get("shared") != shared_now:
        return False
    capacity = shape.get("capacity", {})
    return all(n <= capacity.get(name, 0) for name, n in want["needs"].items())


def scope_tables(compiled: Compiled) -> tuple[str, ...]:
    """The scope's tables a program of compiled uses: the log ring and ban tables always,
    the connection table when it tracks (else it has a tiny one of its own)."""
    return (*SCOPE_MAPS, *(CT_MAPS if compiled.config.ct_enabled else ()))


def shared_ids(fds: dict[str, int]) -> dict[str, int]:
    """The kernel's ids of the scope's shared tables, by name."""
    return {name: libbpf.map_info(fd).id for name, fd in sorted(fds.items())}


_INDEX_KEYS = (c_uint32 * 0)()


def index_keys(n: int) -> ctypes.Array:
    """The keys 0, 1, ... of an array table, at least n of them, for a batch update of its
    first n entries. Built once at the largest size asked for: a ctypes array built from
    range() costs 50 ms at the 270,000 slots of class_of, on every fill."""
    global _INDEX_KEYS
    if len(_INDEX_KEYS) < n:
        _INDEX_KEYS = (c_uint32 * n).from_buffer_copy(array("I", range(n)).tobytes())
    return _INDEX_KEYS


def write_array(fd: int, data: bytes, value_size: int) -> None:
    """data, values of value_size bytes each, over the first entries of an array table.

    A table made mmapable (BPF_F_MMAPABLE: the large tables refill() rewrites) is written
    through a shared mapping of its values, a copy in memory: one syscall per 256 elements
    of a batch update cost 0.07 s for class_of's 270,000 slots, on every apply. The caller
    writes only tables no packet reads yet (a new or the idle generation)."""
    n = len(data) // value_size
    if not n:
        return
    info = libbpf.map_info(fd)
    elem = _slot_bytes(info)
    if not info.map_flags & libbpf.BPF_F_MMAPABLE:
        keys = index_keys(n)
        values = (c_uint8 * len(data)).from_buffer_copy(data)
        libbpf.map_update_batch_raw(fd, keys, values, 4, value_size, n)
        return
    if elem != value_size:  # u32 values: each in the first half of its 8 bytes
        if (value_size, elem) != (4, 8):
            raise RuntimeFailure(f"cannot lay out {value_size}-byte values in {elem}-byte slots")
        spread = array("I", bytes(8 * n))
        spread[0::2] = array("I", data)
        data = spread.tobytes()
    with _mapped(fd, elem * info.max_entries) as values:
        values[: len(data)] = data


def _slot_bytes(info: libbpf.MapInfo) -> int:
    """The bytes an array keeps a value in: the kernel aligns each to 8."""
    return (info.value_size + 7) // 8 * 8


def _mapped(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def empty(fd: int, ncpus: int | None = None) -> None:
    """Every entry of a table gone (a hash or trie) or zero (an array)."""
    ncpus = ncpus or libbpf.num_possible_cpus()
    info = libbpf.map_info(fd)
    if info.map_flags & libbpf.BPF_F_MMAPABLE:
        size = _slot_bytes(info) * info.max_entries
        with _mapped(fd, size) as values:
            values[:] = bytes(size)
        return
    if info.type in _ARRAYS:
        n = info.max_entries
        value_size = _slot_bytes(info) * ncpus if info.type in _PER_CPU else info.value_size
        keys = index_keys(n)
        values = (c_uint8 * (value_size * n))()
        libbpf.map_update_batch_raw(fd, keys, values, 4, value_size, n)
        return
    key = (c_uint8 * info.key_size)()
    while libbpf.map_next_key(fd, None, key):  # the first key each time: deleting breaks a walk
        libbpf.map_delete(fd, key)


def _lpm_key(net: Network) -> ctypes.Structure:
    """The key of an IPv6 trie entry (IPv4 prefixes go into the DIR tables)."""
    return shared.Lpm6Key(net.prefixlen, (c_uint8 * 16)(*net.network_address.packed))
