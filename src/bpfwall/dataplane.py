"""Load, pin, attach, swap generations, and read back what is running.

Everything bpfwall leaves on a host lives in one scope per network namespace:

    /sys/fs/bpf/bpfwall/<scope>/gen-<N>/{ingress,egress}/{prog,counters}   the running generation
    /sys/fs/bpf/bpfwall/<scope>/gen-<N>/{set4,set6,set_version}   its CIDR sets (`bpfwall set`)
    /sys/fs/bpf/bpfwall/<scope>/link-<ifname>                    one XDP link per interface
    /run/bpfwall/<scope>.json                                     what was applied (rules, interfaces)

where <scope> is "host" or "netns-<name>". An apply loads generation N+1,
points every link at it with bpf_link_update (atomic per interface; the
interface is never without a program), then drops generation N.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import access, counters, faults, ifinfo, libbpf, netns, setmaps, shared
from .cidrset import Element, format_element
from .compiler import Compiled, compile_ruleset
from .dispatcher import DIRECTIONS, Dispatcher
from .errors import InputError, RuntimeFailure
from .generation import CT_MAPS, SCOPE_MAPS, SET_MAPS, Generation
from .ruleset import Ruleset
from .setmaps import Fix, SetTables

PIN_ROOT = "/sys/fs/bpf/bpfwall"
LOCK_WAIT = 120.0  # seconds a run waits for another to finish
STATE_ROOT = "/run/bpfwall"
MODES = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}


def compile_all(ruleset: Ruleset) -> dict[str, Compiled]:
    """The tables of each direction that needs a program (ingress always)."""
    out = {"ingress": compile_ruleset(ruleset, "ingress")}
    if ruleset.needs_egress():
        out["egress"] = compile_ruleset(ruleset, "egress")
    return out


def scope_name(ns: str | None) -> str:
    return f"netns-{ns}" if ns else "host"


def namespace_scopes() -> list[str]:
    """The network namespaces that have a bpfwall scope (a state file), by name."""
    try:
        files = os.listdir(STATE_ROOT)
    except OSError:
        return []
    prefix, suffix = "netns-", ".json"
    return sorted(f[len(prefix):-len(suffix)] for f in files
                  if f.startswith(prefix) and f.endswith(suffix) and f.count(".") == 1)


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeFailure("this needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")


def ensure_bpffs() -> None:
    """Mounts bpffs at /sys/fs/bpf if the host has not."""
    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f):
            return
    os.makedirs("/sys/fs/bpf", exist_ok=True)
    if os.system("mount -t bpf bpf /sys/fs/bpf") != 0:
        raise RuntimeFailure("bpffs is not mounted at /sys/fs/bpf and mounting it failed")


@dataclass
class State:
    """What the last apply left in force in one scope."""

    netns: str | None
    generation: int = 0
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ifindex, mode
    ruleset: dict[str, Any] | None = None
    applied_at: float = 0.0
    carried: dict[str, Any] = field(default_factory=dict)  # counters.carry(): kept across applies
    group: str | None = None  # may read counters and state (the rule file's `group:`)
    dispatcher: dict[str, int] = field(default_factory=dict)  # program ids the links run, per direction
    programs: dict[str, int] = field(default_factory=dict)  # the generation's program ids, per direction
    notice: str = ""  # what an operator should know: a rollback, say

    def rules(self) -> Ruleset:
        if self.ruleset is None:
            raise RuntimeFailure("no rule set is applied here")
        return Ruleset.from_json(self.ruleset)


class Scope:
    """The firewall of one network namespace (or of the host)."""

    def __init__(self, ns: str | None = None) -> None:
        self.ns = ns
        self.name = scope_name(ns)
        self.pin_dir = os.path.join(PIN_ROOT, self.name)
        self.state_path = os.path.join(STATE_ROOT, f"{self.name}.json")
        # What `bpfwall set` changed since the apply: small, so a set command never
        # rewrites the rule set's state (megabytes at 10,000 rules).
        self.sets_path = os.path.join(STATE_ROOT, f"{self.name}.sets.json")
        # What an apply is in the middle of, for the next run to finish or undo.
        self.journal_path = os.path.join(STATE_ROOT, f"{self.name}.journal.json")
        # The apply that awaits `bpfwall confirm`, and how to roll it back.
        self.confirm_path = os.path.join(STATE_ROOT, f"{self.name}.confirm.json")
        self.dispatch_dir = os.path.join(self.pin_dir, "dispatch")
        self.on_wait: Callable[[str], None] | None = None  # told when another run holds the lock

    # --- state -------------------------------------------------------------------------------

    def read_state(self) -> State | None:
        data = _read_json(self.state_path)
        return None if data is None else State(**data)

    def require_state(self) -> State:
        state = self.read_state()
        if state is None or not state.interfaces:
            where = f" in network namespace '{self.ns}'" if self.ns else ""
            raise RuntimeFailure(f"bpfwall is not running{where}: nothing applied "
                                 f"(see 'bpfwall apply{self._ns_arg()}')")
        return state

    def _write_state(self, state: State) -> None:
        _write_json(self.state_path, state.__dict__, access.group_id(state.group))

    def _share(self, state: State) -> list[str]:
        """Owners and modes of the generation in force, for the rule file's group."""
        return access.share(PIN_ROOT, self.pin_dir, self.gen_dir(state.generation), STATE_ROOT,
                            [self.state_path, self.sets_path], access.group_id(state.group))

    def unchanged(self, path: str, interfaces: list[str], mode: str) -> int | None:
        """The generation in force, when applying the rule file at path to interfaces would
        change nothing: its rule set was read from these very files, byte for byte, no set
        has changed since by `set`, every interface is protected already in that mode with
        its link alive, and no apply is unfinished or awaiting confirmation. None: apply."""
        from .config import inputs_unchanged

        state = self.read_state()
        if os.geteuid() != 0 or state is None or not state.interfaces or not state.ruleset:
            return None
        if os.path.exists(self.journal_path) or os.path.exists(self.confirm_path):
            return None
        inputs = state.ruleset.get("inputs") or {}
        if os.path.abspath(path) not in inputs or not inputs_unchanged(inputs):
            return None
        live = _read_json(self.sets_path) or {}
        if live.get("generation") == state.generation and live.get("sets"):
            return None  # a set changed since: the apply puts the file's elements back
        if any(n not in state.interfaces or mode not in ("auto", state.interfaces[n].get("mode"))
               for n in interfaces):
            return None
        if not all(self._link_health(n, i, state).get("attached") for n, i in state.interfaces.items()):
            return None
        return state.generation

    def set_changes(self, state: State) -> dict[str, dict[str, Any]]:
        """Per CIDR set of the generation in force: its size and the Fix of its last change."""
        sets = {name: {"size": meta["size"]} for name, meta in (state.ruleset or {}).get("sets", {}).items()}
        data = _read_json(self.sets_path) or {}
        if data.get("generation") == state.generation:  # else left by an older generation
            for name, entry in data.get("sets", {}).items():
                if name in sets:
                    sets[name] = entry
        return sets

    @contextlib.contextmanager
    def lock(self, wait: float = LOCK_WAIT) -> Iterator[None]:
        """Serialises runs that change the firewall. One lock for every scope: they are
        rare, and a lock file per scope would pile up in /run for namespaces long gone.
        A run that finds it taken says by whom, waits up to `wait` seconds, then fails."""
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(STATE_ROOT, "lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + wait
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    if time.monotonic() >= deadline:
                        raise RuntimeFailure(f"another bpfwall run (pid {holder}) still holds "
                                             f"{STATE_ROOT}/lock after {wait:g} s: try again later") from None
                    if not told and self.on_wait is not None:
                        self.on_wait(f"waiting for another bpfwall run (pid {holder}) to finish")
                        told = True
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def gen_dir(self, n: int) -> str:
        return os.path.join(self.pin_dir, f"gen-{n}")

    def link_pin(self, ifname: str, direction: str = "ingress") -> str:
        return os.path.join(self.pin_dir, f"{'link' if direction == 'ingress' else 'tcx'}-{ifname}")

    def open_generation(self, state: State | None = None, direction: str = "ingress") -> Generation:
        """The generation in force. A reader without root gets its maps read-only and
        no program (a program pin opens only read-write)."""
        state = state or self.require_state()
        directory = os.path.join(self.gen_dir(state.generation), direction)
        read_only = os.geteuid() != 0
        try:
            return Generation.open_pinned(directory, read_only)
        except libbpf.BpfError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise access.denied(f"the counters pinned in {directory}", state.group) from None
            raise RuntimeFailure(f"the pinned data plane in {directory} is unreadable: {exc}") from None

    # --- sets ----------------------------------------------------------------------------------

    def cidr_set_slot(self, name: str, state: State | None = None) -> int:
        """The slot of CIDR set `name` in force, or an InputError that says why not."""
        state = state or self.require_state()
        meta = (state.ruleset or {}).get("sets", {}).get(name)
        if meta is None:
            known = ", ".join(sorted((state.ruleset or {}).get("sets", {}))) or "none"
            raise InputError(f"no set named '{name}' in the rule set in force (sets: {known})")
        if meta["type"] != "cidr":
            raise InputError(f"set '{name}' holds ports, which are compiled into the rule tables: "
                             "change it in the rule file and apply it")
        return meta["slot"]

    def set_change(self, name: str, elements: list[Element], add: bool) -> tuple[int, int]:
        """Adds (or removes) elements of a CIDR set in force, all at once.

        Returns (changed, unchanged): elements already present (for add) are
        left alone; removing an element that is not in the set changes nothing
        and is an error.
        """
        require_root()
        with self.lock(), netns.enter(self.ns):
            state = self.require_state()
            slot = self.cidr_set_slot(name, state)
            changes = self.set_changes(state)
            meta = changes[name]

            def record(fix: Fix) -> None:
                meta["fix"] = fix.to_json()
                _write_json(self.sets_path, {"generation": state.generation, "sets": changes},
                            access.group_id(state.group))

            with SetTables(self.gen_dir(state.generation)) as tables:
                tables.level(slot, Fix.from_json(meta.get("fix")))
                version = tables.version(slot)
                present = {e for e in elements if tables.contains(slot, e, version)}
                if add:
                    todo = list(dict.fromkeys(e for e in elements if e not in present))
                    tables.change(slot, todo, [], record)
                else:
                    missing = [e for e in elements if e not in present]
                    if missing:
                        raise InputError(f"not in set '{name}': " + ", ".join(
                            format_element(e) for e in missing[:5]) + (" ..." if len(missing) > 5 else ""))
                    todo = list(dict.fromkeys(elements))
                    tables.change(slot, [], todo, record)
            meta["size"] = meta.get("size", 0) + (len(todo) if add else -len(todo))
            _write_json(self.sets_path, {"generation": state.generation, "sets": changes},
                        access.group_id(state.group))
        return len(todo), len(elements) - len(todo)

    def set_elements(self, name: str) -> list[Element]:
        with netns.enter(self.ns):
            state = self.require_state()
            slot = self.cidr_set_slot(name, state)
            with SetTables(self.gen_dir(state.generation)) as tables:
                return sorted(tables.elements(slot))

    def counter_blocks(self, state: State) -> counters.Blocks:
        """Every counter of the generation in force per interface block (the protected
        interfaces by name, counters.OTHER for the rest), plus what earlier ones carried."""
        names = {i.get("counter_block", 0): n for n, i in state.interfaces.items()}
        names[0] = counters.OTHER
        n_blocks = max(names) + 1
        live: counters.Blocks = {}
        for direction in counters.DIRECTIONS:
            if self.has_direction(state, direction):
                with self.open_generation(state, direction) as gen:
                    for b, counts in enumerate(gen.counter_blocks(n_blocks)):
                        if b in names:
                            live.setdefault(names[b], {})[direction] = counts
        return counters.blocks_with_carried(live, state.carried)

    def counter_totals(self, state: State) -> dict[str, counters.Counts]:
        """Every counter of the generation in force, over all interfaces, with what was carried."""
        return counters.total(self.counter_blocks(state))

    def has_direction(self, state: State, direction: str) -> bool:
        return os.path.exists(os.path.join(self.gen_dir(state.generation), direction, "prog"))

    def open_pinned(self, names: tuple[str, ...]) -> dict[str, int] | None:
        """fds of scope-level pinned maps, or None when any is missing."""
        paths = {name: os.path.join(self.pin_dir, name) for name in names}
        if not all(os.path.exists(p) for p in paths.values()):
            return None
        read_only = os.geteuid() != 0  # a reader of the rule file's group
        fds: dict[str, int] = {}
        try:
            for name, p in paths.items():
                fds[name] = libbpf.obj_get(p, read_only)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return fds

    def _scope_maps_for(self, compiled: Compiled, report: ApplyReport) -> dict[str, int] | None:
        """The pinned scope tables to share, or None to make (and pin) new ones: the
        ban and scan tables are made small while no rule bans, and remade full-size
        when a rule set first needs them."""
        fds = self.open_pinned(SCOPE_MAPS)
        if fds is None:
            return None
        small = ((compiled.bans_by_rules() and libbpf.map_info(fds["bans"]).max_entries < shared.MAX_BANS)
                 or (compiled.config.scan_ports
                     and libbpf.map_info(fds["scan_bans"]).max_entries < shared.MAX_BANS))
        if not small:
            return fds
        for fd in fds.values():
            os.close(fd)
        report.notes.append("the ban tables are made full-size; the packet log starts a new ring")
        return None

    def open_ct_maps(self) -> dict[str, int] | None:
        """fds of the pinned connection table, or None when there is none."""
        return self.open_pinned(CT_MAPS)

    def _drop_ct_maps(self) -> None:
        for name in CT_MAPS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.pin_dir, name))

    def _ct_maps_for(self, compiled: Compiled, uses_ct: bool, report: ApplyReport) -> dict[str, int] | None:
        """The pinned connection table to share, if it fits; else None (the first generation
        loaded creates one, which apply then pins)."""
        fds = self.open_ct_maps()
        if fds is None or not uses_ct:
            if fds:
                for fd in fds.values():
                    os.close(fd)
            return None
        size = libbpf.map_info(fds["conntrack"]).max_entries
        if size != compiled.ct_max_entries:
            for fd in fds.values():
                os.close(fd)
            report.notes.append(f"connection table resized from {size} to {compiled.ct_max_entries} "
                                "entries: tracked connections are forgotten")
            self._drop_ct_maps()
            return None
        return fds

    # --- apply -------------------------------------------------------------------------------

    def apply(self, ruleset: Ruleset, interfaces: list[str], mode: str = "native",
              compiled: dict[str, Compiled] | None = None, confirm: float | None = None) -> ApplyReport:
        """Puts ruleset in force on interfaces (and on every interface already attached).

        compiled: the ruleset compiled per direction (compile_all), if the caller has it.
        confirm: seconds to wait for `confirm()` before the previous rule set is put back;
        a detached watchdog process does that even if this process dies.

        The sequence (each step named for faults.step): load and pin the new generation,
        write a journal of what is about to change, put its programs in the dispatcher's
        idle slots, attach new links to the dispatcher, flip the dispatcher (the one
        moment the rule set changes, everywhere at once), record the state, then remove
        the old generation. A run killed before the flip leaves the old rule set in
        force, after it the new one; the next apply, status or down finishes or undoes
        what the journal says was under way.
        """
        require_root()
        ensure_bpffs()
        tables = compiled or compile_all(ruleset)
        compiled_in = tables["ingress"]
        report = ApplyReport()
        faults.step("compiled")
        with self.lock(), netns.enter(self.ns):
            faults.step("locked")
            self.repair(report)
            pending = _read_json(self.confirm_path)
            if pending is not None:
                left = max(0, int(pending["deadline"] - time.time()))
                raise RuntimeFailure(
                    f"generation {pending['generation']} awaits confirmation ({left} s left): run "
                    f"'bpfwall confirm{self._ns_arg()}' to keep it, or wait for the rollback")
            old = self.read_state() or State(netns=self.ns)
            targets: dict[str, int] = {}
            for name in interfaces:
                targets[name] = netns.ifindex(name, self.ns)
            for name in old.interfaces:
                if name in targets:
                    continue
                try:
                    targets[name] = netns.ifindex(name, self.ns)
                except RuntimeFailure:
                    report.notes.append(f"{name}: interface is gone; forgetting it")
                    for direction in ("ingress", "egress"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self.link_pin(name, direction))
            rule_ifaces = {n for r in ruleset.rules for n in (r.interfaces or ())}
            known = {}
            for name in sorted(rule_ifaces):
                try:
                    known[name] = netns.ifindex(name, self.ns)
                except RuntimeFailure:
                    report.notes.append(f"rules name interface '{name}', which does not exist here")

            if "syn_cookies" in ruleset.conntrack:
                check_syn_cookie_host(self.ns)
            t0 = time.monotonic()
            uses_ct = ruleset.uses_ct()
            ct_fds = self._ct_maps_for(compiled_in, uses_ct, report)
            gens: dict[str, Generation] = {}
            log_fds: dict[str, int] | None = None
            disp, created = Dispatcher.open_or_create(self.dispatch_dir)
            new_n = max(old.generation, disp.active()) + 1
            new_dir = self.gen_dir(new_n)
            journal: dict[str, Any] = {}
            flipped = False
            # A block of counters per interface, in name order; beyond the map's blocks,
            # interfaces count in block 0 with any other.
            blocks = {name: (i + 1 if i + 1 < shared.MAX_IFACES else 0) for i, name in enumerate(sorted(targets))}
            kinds = ifinfo.kinds(sorted(targets), self.ns)
            slots = {targets[name]: b | (shared.IFACE_ANSWER_REDIRECT if kinds.get(name) == "veth" else 0)
                     for name, b in blocks.items()}
            by_ifindex = {ifindex: value for ifindex, value in slots.items() if value}
            try:
                if created and old.generation:
                    self._adopt(disp, old)  # links of an older bpfwall pointed at generations
                for c in tables.values():
                    c.config.generation = new_n  # log records name their generation
                log_fds = self._scope_maps_for(compiled_in, report)
                gens["ingress"] = Generation.load(compiled_in, known, ct_fds, log_fds=log_fds,
                                                  iface_slots=by_ifindex)
                if uses_ct and ct_fds is None:  # the first table of this scope: pin it
                    for name in CT_MAPS:
                        _replace_pin(gens["ingress"].map_fds[name], os.path.join(self.pin_dir, name))
                    ct_fds = self.open_ct_maps()
                if log_fds is None:  # the first generation of this scope: its ring is the scope's
                    for name in SCOPE_MAPS:
                        _replace_pin(gens["ingress"].map_fds[name], os.path.join(self.pin_dir, name))
                    log_fds = self.open_pinned(SCOPE_MAPS)
                set_fds = {name: gens["ingress"].map_fds[name] for name in SET_MAPS}
                if "egress" in tables:
                    gens["egress"] = Generation.load(tables["egress"], known, ct_fds, set_fds, log_fds,
                                                     by_ifindex)
                t1 = time.monotonic()
                setmaps.fill(set_fds, ruleset.cidr_sets, ruleset.set_slots())
                report.set_seconds = time.monotonic() - t1
                report.load_seconds = time.monotonic() - t0
                faults.step("loaded")
                shutil.rmtree(new_dir, ignore_errors=True)  # a leftover of an interrupted apply
                for direction, gen in gens.items():
                    gen.pin(os.path.join(new_dir, direction))
                for name, fd in set_fds.items():
                    libbpf.obj_pin(fd, os.path.join(new_dir, name))
                faults.step("pinned")

                state = State(netns=self.ns, generation=new_n, ruleset=ruleset.to_json(),
                              applied_at=time.time(), group=ruleset.group)
                new_links = [(name, "ingress") for name in targets if not self._has_link(name, "ingress")]
                if "egress" in gens:
                    new_links += [(name, "egress") for name in targets if not self._has_link(name, "egress")]
                journal = {"generation": new_n, "previous": old.generation, "new_links": new_links}
                _write_json(self.journal_path, journal)
                faults.step("journal")
                for direction in DIRECTIONS:
                    gen = gens.get(direction)
                    disp.stage(direction, new_n, gen.prog_fd if gen else None)
                faults.step("staged")
                for name, ifindex in targets.items():
                    state.interfaces[name] = self._attach(disp, name, ifindex, old.interfaces.get(name), mode,
                                                          "egress" in gens, report)
                    state.interfaces[name]["counter_block"] = blocks[name]
                    state.interfaces[name]["kind"] = kinds.get(name, "")
                    # What the interface had failed to deliver before: stats counts from here.
                    before = (old.interfaces.get(name) or {}).get("undelivered_base")
                    state.interfaces[name]["undelivered_base"] = (
                        before if name in report.swapped else ifinfo.undelivered(name, self.ns))
                    faults.step(f"attached:{name}")
                state.dispatcher = {d: disp.dispatcher_id(d) for d in DIRECTIONS}
                state.programs = {d: disp.program_id(d, new_n) for d in DIRECTIONS}
                journal["state"] = state.__dict__
                if confirm is not None:
                    report.confirm_token = self._arm_rollback(journal, old, confirm)
                    faults.step("armed")
                _write_json(self.journal_path, journal)
                faults.step("journal-complete")
                disp.flip(new_n)
                flipped = True
                faults.step("flipped")
                # Read after the flip: the old generation counts no more packets.
                if old.ruleset is not None:
                    try:
                        state.carried = counters.carry_blocks(old.ruleset, self.counter_blocks(old),
                                                              state.ruleset)
                    except RuntimeFailure as exc:
                        report.notes.append(f"counters start from zero: {exc}")
                self._commit(state)
                faults.step("committed")
                report.notes += self._share(state)
                for name, info in state.interfaces.items():
                    problem = self.answer_problem(ruleset, name, info)
                    if problem:
                        report.notes.append(f"{name}: {problem}")
            except BaseException:
                if journal:
                    self._undo(disp, journal, old, flipped)
                shutil.rmtree(new_dir, ignore_errors=True)
                if not old.interfaces:
                    self._remove_all()  # nothing was protected before: leave nothing
                raise
            finally:
                for gen in gens.values():
                    gen.close()
                for fd in [*(ct_fds or {}).values(), *(log_fds or {}).values()]:
                    os.close(fd)  # ours: libbpf keeps its own duplicates
            try:
                if confirm is None:
                    self._finish(disp, state, old.generation)
                    faults.step("cleaned")
            finally:
                disp.close()
        report.generation = new_n
        report.interfaces = state.interfaces
        return report

    def _ns_arg(self) -> str:
        return f" --netns {self.ns}" if self.ns else ""

    def _has_link(self, name: str, direction: str) -> bool:
        return os.path.exists(self.link_pin(name, direction))

    def _adopt(self, disp: Dispatcher, old: State) -> None:
        """Puts the generation in force under a new dispatcher before links move to it,
        so the move changes nothing a packet sees."""
        for direction in DIRECTIONS:
            path = os.path.join(self.gen_dir(old.generation), direction, "prog")
            if os.path.exists(path):
                fd = libbpf.obj_get(path)
                try:
                    disp.stage(direction, old.generation, fd)
                finally:
                    os.close(fd)
        disp.flip(old.generation)

    def _commit(self, state: State) -> None:
        """Records the generation in force; the journal's work is done."""
        self._write_state(state)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    def _finish(self, disp: Dispatcher, state: State, previous: int) -> None:
        """Removes what only the previous generation used, once the new one is here to stay."""
        if previous and previous != state.generation:
            disp.clear(previous)
        for name, info in state.interfaces.items():
            if not info.get("egress"):
                self._detach(self.link_pin(name, "egress"))  # nothing to do on egress now
        if not any(r.get("ct") for r in (state.ruleset or {}).get("rules", [])):
            self._drop_ct_maps()  # (read from the JSON: a Ruleset of 10,000 rules is slow to rebuild)
        for entry in os.listdir(self.pin_dir):
            if entry.startswith("gen-") and entry != f"gen-{state.generation}":
                shutil.rmtree(os.path.join(self.pin_dir, entry), ignore_errors=True)

    def _undo(self, disp: Dispatcher, journal: dict[str, Any], old: State, flipped: bool) -> None:
        """Takes back an apply that did not complete: the previous generation in force
        again, the new one's programs and links gone."""
        generation = journal["generation"]
        if flipped or disp.active() == generation:
            disp.flip(journal["previous"])
        self._take_back(disp, generation, journal.get("new_links", []))
        pending = _read_json(self.confirm_path)
        if pending is not None and pending.get("generation") == generation:
            os.unlink(self.confirm_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)
        if not old.interfaces:
            self._remove_all()

    def _take_back(self, disp: Dispatcher, generation: int, new_links: list[list[str]]) -> None:
        """Removes a generation no longer in force: its programs, the links its apply
        added, its pins. Shared by an undone apply and an expired confirm."""
        with contextlib.suppress(RuntimeFailure, libbpf.BpfError):
            disp.clear(generation)
        for name, direction in new_links:
            self._detach(self.link_pin(name, direction))
        shutil.rmtree(self.gen_dir(generation), ignore_errors=True)

    def _attach(self, disp: Dispatcher, name: str, ifindex: int, old: dict[str, Any] | None,
                mode: str, egress: bool, report: ApplyReport) -> dict[str, Any]:
        """Links the dispatcher to one interface: XDP always, tcx egress when the rule set
        has an egress program. A link already there stays (it already runs the dispatcher)."""
        info = {"ifindex": ifindex, "mode": self._attach_xdp(disp, name, ifindex, old, mode, report),
                "egress": egress}
        if not egress:
            return info  # an egress link left from before stays until _finish: a rollback needs it
        pin = self.link_pin(name, "egress")
        fd = self._live_link(pin, ifindex)
        if fd is not None:
            self._point_at_dispatcher(fd, disp, "egress")
            return info
        fd = libbpf.link_create(disp.prog_fd("egress"), ifindex, libbpf.BPF_TCX_EGRESS)
        try:
            libbpf.obj_pin(fd, pin)
        finally:
            os.close(fd)
        return info

    @staticmethod
    def _point_at_dispatcher(fd: int, disp: Dispatcher, direction: str) -> None:
        """Moves a link an older bpfwall pointed at a generation onto the dispatcher; the
        dispatcher runs that same generation (_adopt), so packets see no change."""
        try:
            if libbpf.link_info(fd).prog_id != disp.dispatcher_id(direction):
                libbpf.link_update(fd, disp.prog_fd(direction))
        finally:
            os.close(fd)

    def _live_link(self, pin: str, ifindex: int) -> int | None:
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

    @staticmethod
    def _detach(pin: str) -> bool:
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

    def _attach_xdp(self, disp: Dispatcher, name: str, ifindex: int, old: dict[str, Any] | None,
                    mode: str, report: ApplyReport) -> str:
        pin = self.link_pin(name)
        fd = self._live_link(pin, ifindex)
        if fd is not None:
            have = (old or {}).get("mode", "native")
            if mode not in ("auto", have):
                os.close(fd)
                raise RuntimeFailure(
                    f"{name} is attached in {have} mode; run 'bpfwall down{self._ns_arg()} -i {name}' first "
                    f"to change to {mode} (it leaves the interface open meanwhile)")
            self._point_at_dispatcher(fd, disp, "ingress")
            report.swapped.append(name)
            return have
        tries = ["native", "generic"] if mode == "auto" else [mode]
        for i, m in enumerate(tries):
            try:
                fd = libbpf.link_create(disp.prog_fd("ingress"), ifindex, libbpf.BPF_XDP, MODES[m])
                break
            except libbpf.BpfError as exc:
                if exc.errno in (errno.EBUSY, errno.EEXIST):
                    raise RuntimeFailure(
                        f"{name} already has an XDP program that is not bpfwall's; remove it first "
                        f"(ip link set dev {name} xdp off)") from None
                if i + 1 == len(tries):
                    hint = " (try --mode generic)" if m == "native" else ""
                    raise RuntimeFailure(f"cannot attach to {name} in {m} mode: {exc}{hint}") from None
        try:
            libbpf.obj_pin(fd, pin)
        finally:
            os.close(fd)
        report.attached.append(name)
        return m

    # --- down --------------------------------------------------------------------------------

    def down(self, interfaces: list[str] | None = None, report: ApplyReport | None = None) -> list[str]:
        """Detaches from interfaces (all when None); removes every pin once none is left."""
        require_root()
        report = report or ApplyReport()
        removed = []
        with self.lock():
            if interfaces:
                with netns.enter(self.ns):
                    self.repair(report)
            state = self.read_state() or State(netns=self.ns)
            names = list(interfaces) if interfaces else list(state.interfaces)
            if not interfaces and os.path.isdir(self.pin_dir):
                names += [e.split("-", 1)[1] for e in os.listdir(self.pin_dir)
                          if e.startswith(("link-", "tcx-")) and e.split("-", 1)[1] not in names]
            for name in names:
                detached = self._detach(self.link_pin(name))
                self._detach(self.link_pin(name, "egress"))
                if detached:
                    removed.append(name)
                state.interfaces.pop(name, None)
            if state.interfaces:
                self._write_state(state)
            else:
                self._remove_all()
        return removed

    def _remove_all(self) -> None:
        """Everything of this scope: pins (the dispatcher, generations, tables) and state."""
        if os.path.isdir(self.pin_dir):
            for entry in os.listdir(self.pin_dir):
                if entry.startswith(("link-", "tcx-")):
                    self._detach(os.path.join(self.pin_dir, entry))
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        for path in (self.state_path, self.sets_path, self.journal_path, self.confirm_path,
                     self.state_path + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(PIN_ROOT)  # only if no other scope is left

    # --- repair, confirm, rollback -------------------------------------------------------------

    def repair(self, report: ApplyReport) -> None:
        """Finishes or undoes what an interrupted run left, and says what it did. Called
        with the lock held, inside the namespace, by apply, status (as root) and down."""
        disp = Dispatcher.open(self.dispatch_dir)
        try:
            pending = _read_json(self.confirm_path)
            if pending is not None and pending["deadline"] <= time.time():
                if disp is not None:
                    self._expire(disp, pending, report)
                else:
                    os.unlink(self.confirm_path)
            journal = _read_json(self.journal_path)
            state = self.read_state() or State(netns=self.ns)
            if journal is not None:
                active = disp.active() if disp else 0
                if disp is not None and active == journal["generation"] and "state" in journal:
                    new = State(**journal["state"])
                    self._commit(new)
                    report.repairs.append(f"an interrupted apply had put generation {active} in force: "
                                          "finished it")
                    if _read_json(self.confirm_path) is None:
                        self._finish(disp, new, journal["previous"])
                    state = new
                else:
                    if disp is not None:
                        self._undo(disp, journal, state, flipped=False)
                    else:
                        shutil.rmtree(self.gen_dir(journal["generation"]), ignore_errors=True)
                        os.unlink(self.journal_path)
                    report.repairs.append(
                        f"an interrupted apply of generation {journal['generation']} was undone; "
                        + (f"generation {state.generation} stays in force" if state.generation
                           else "nothing was in force before it"))
            if not state.interfaces and _read_json(self.journal_path) is None:
                self._remove_orphans(report)
            else:
                self._remove_stale(disp, state, report)
        finally:
            if disp is not None:
                disp.close()

    def _remove_orphans(self, report: ApplyReport) -> None:
        """Pins with no state: a first apply killed before its journal. No link points at
        them (links come after the journal), so they go, whole."""
        if os.path.isdir(self.pin_dir) and not any(
                e.startswith(("link-", "tcx-")) for e in os.listdir(self.pin_dir)):
            self._remove_all()
            report.repairs.append("removed the pins of a first apply that did not finish")

    def _remove_stale(self, disp: Dispatcher | None, state: State, report: ApplyReport) -> None:
        """Generations no state refers to: left by a run killed before its journal."""
        if not os.path.isdir(self.pin_dir):
            return
        pending = _read_json(self.confirm_path)
        keep = {state.generation, *([pending["previous"]["generation"]] if pending else [])}
        stale = [e for e in os.listdir(self.pin_dir)
                 if e.startswith("gen-") and e[4:].isdigit() and int(e[4:]) not in keep]
        for entry in stale:
            shutil.rmtree(os.path.join(self.pin_dir, entry), ignore_errors=True)
        if disp is not None and not pending and state.generation:
            idle = state.generation + 1  # the other slot: nothing belongs in it now
            if any(disp.program_id(d, idle) for d in DIRECTIONS):
                disp.clear(idle)
                stale.append("its programs")
        if stale:
            report.repairs.append("removed what an interrupted apply left: " + ", ".join(stale))

    def _arm_rollback(self, journal: dict[str, Any], old: State, seconds: float) -> str:
        """Records how to put the previous rule set back and starts a watchdog that does it
        at the deadline unless confirm() comes first. The watchdog is a process of its own
        session: it outlives this one, the terminal and the SSH connection."""
        token = secrets.token_hex(8)
        _write_json(self.confirm_path, {
            "token": token, "deadline": time.time() + seconds, "seconds": seconds,
            "generation": journal["generation"], "previous": old.__dict__,
            "new_links": journal["new_links"]})
        subprocess.Popen(
            [sys.executable, "-m", "bpfwall.watchdog", self.ns or "", token],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, cwd="/")
        return token

    def pending_confirm(self) -> dict[str, Any] | None:
        """The apply that awaits confirmation: generation, deadline, token; or None
        (also for a reader who may not see it: the file is root's)."""
        if os.geteuid() != 0 and not os.access(self.confirm_path, os.R_OK):
            return None
        return _read_json(self.confirm_path)

    def confirm(self) -> int:
        """Keeps the generation that awaits confirmation; returns its number."""
        require_root()
        report = ApplyReport()
        with self.lock(), netns.enter(self.ns):
            self.repair(report)
            pending = _read_json(self.confirm_path)
            if pending is None:
                raise RuntimeFailure("nothing awaits confirmation"
                                     + ("; " + "; ".join(report.repairs) if report.repairs else ""))
            state = self.require_state()
            with Dispatcher.open(self.dispatch_dir) or _missing(self.dispatch_dir) as disp:
                self._finish(disp, state, pending["previous"]["generation"])
            os.unlink(self.confirm_path)
            return pending["generation"]

    def expire(self, token: str) -> str | None:
        """The watchdog's deadline: rolls back if the apply of `token` is still unconfirmed.
        Returns what was done, or None when there was nothing to do."""
        report = ApplyReport()
        with self.lock(), netns.enter(self.ns):
            pending = _read_json(self.confirm_path)
            if pending is None or pending["token"] != token:
                return None
            with Dispatcher.open(self.dispatch_dir) or _missing(self.dispatch_dir) as disp:
                return self._expire(disp, pending, report)

    def _expire(self, disp: Dispatcher, pending: dict[str, Any], report: ApplyReport) -> str:
        previous = State(**pending["previous"])
        generation = pending["generation"]
        disp.flip(previous.generation)
        self._take_back(disp, generation, pending.get("new_links", []))
        os.unlink(self.confirm_path)
        what = (f"generation {generation} was not confirmed within {pending['seconds']:g} s: "
                + (f"rolled back to generation {previous.generation}" if previous.interfaces
                   else "removed (nothing was in force before it)"))
        if previous.interfaces:
            previous.notice = what + time.strftime(" at %Y-%m-%dT%H:%M:%S%z")
            self._write_state(previous)
            self._share(previous)
        else:
            self._remove_all()
        report.repairs.append(what)
        return what

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What is in force and whether each link is alive. As root it first repairs what
        an interrupted run left (and lists it under "repairs"); a reader without root gets
        what the state file and netlink tell (the links' pins are root's)."""
        report = ApplyReport()
        root = os.geteuid() == 0
        if root:
            with self.lock(), netns.enter(self.ns):
                self.repair(report)
        state = self.read_state()
        out: dict[str, Any] = {"netns": self.ns, "running": bool(state and state.interfaces),
                               "repairs": report.repairs}
        if not state:
            return out
        rules = state.rules()
        out.update(
            generation=state.generation,
            applied_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(state.applied_at)),
            rules_file=rules.source,
            rules=len([r for r in rules.rules if not r.implicit]),
            policy=rules.policy,
            sets={name: {"type": m["type"], "size": self.set_changes(state)[name]["size"]}
                  for name, m in rules.sets.items()},
            interfaces=[],
            notice=state.notice,
        )
        pending = self.pending_confirm()
        if pending is not None:
            out["awaiting_confirm"] = {"generation": pending["generation"],
                                       "seconds_left": max(0, round(pending["deadline"] - time.time())),
                                       "rollback_to": pending["previous"]["generation"]}
        for name, info in state.interfaces.items():
            entry = {"name": name, "ifindex": info["ifindex"], "mode": info["mode"],
                     "egress": info.get("egress", False),
                     "program_id": state.programs.get("ingress", 0)}
            if root:
                entry.update(self._link_health(name, info, state))
                problem = self.answer_problem(rules, name, info)
                if problem:
                    entry["answers"] = problem
            elif self.ns:  # netlink answers for the namespace one is in, and entering takes root
                entry.update(attached=None, problem="not checked: a network namespace's links need root")
            else:
                entry.update(self._xdp_health(info, state))
            out["interfaces"].append(entry)
        return out

    def answer_problem(self, ruleset: Ruleset, name: str, info: dict[str, Any]) -> str | None:
        """Why the answers this rule set sends from XDP cannot leave the interface, if so."""
        answers = "syn_cookies" in ruleset.conntrack or any(
            r.action == "reject" and r.direction == "ingress" for r in ruleset.rules)
        if not answers:
            return None
        return ifinfo.answers_blocked(info.get("kind", ""), info.get("mode", ""), info["ifindex"], self.ns)

    def _link_health(self, name: str, info: dict[str, Any], state: State) -> dict[str, Any]:
        try:
            with netns.enter(self.ns):
                fd = libbpf.obj_get(self.link_pin(name))
        except libbpf.BpfError:
            return {"attached": False, "problem": "link pin missing"}
        try:
            li = libbpf.link_info(fd)
        finally:
            os.close(fd)
        if li.ifindex == 0:
            return {"attached": False, "problem": "interface is gone"}
        if state.dispatcher and li.prog_id != state.dispatcher.get("ingress"):
            return {"attached": False, "problem": f"link runs program {li.prog_id}, not bpfwall's dispatcher"}
        return {"attached": True}

    @staticmethod
    def _xdp_health(info: dict[str, Any], state: State) -> dict[str, Any]:
        try:
            prog_id = libbpf.xdp_prog_id(info["ifindex"])
        except libbpf.BpfError as exc:
            return {"attached": False, "problem": f"cannot query XDP: {exc}"}
        if prog_id == 0:
            return {"attached": False, "problem": "no XDP program on the interface"}
        if state.dispatcher and prog_id != state.dispatcher.get("ingress"):
            return {"attached": False, "problem": f"XDP program {prog_id} is not bpfwall's dispatcher"}
        return {"attached": True}


SYNCOOKIES_SYSCTL = "/proc/sys/net/ipv4/tcp_syncookies"


def check_syn_cookie_host(ns: str | None) -> None:
    """SYN cookies answered from XDP complete only if the kernel accepts their ACK: it
    does with net.ipv4.tcp_syncookies=2 (a listener takes cookie ACKs only within two
    minutes of sending cookies itself, and 2 makes it send them for every SYN that
    reaches it), or when an nftables synproxy checks the cookie. Runs inside the
    namespace: the sysctl is per network namespace."""
    try:
        with open(SYNCOOKIES_SYSCTL, encoding="ascii") as f:
            value = f.read().strip()
    except OSError:
        value = "?"
    if value == "2":
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10)
        if "synproxy" in listing.stdout:
            return
    command = f"ip netns exec {ns} sysctl" if ns else "sysctl"
    raise RuntimeFailure(
        f"syn_cookies needs the kernel to accept the cookies' ACKs, and net.ipv4.tcp_syncookies is {value}: "
        f"run '{command} -w net.ipv4.tcp_syncookies=2' (and persist it in /etc/sysctl.d), or set up an "
        "nftables synproxy for the ports")


def _read_json(path: str) -> Any:
    """The contents of a state file, or None if there is none."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise access.denied_file(path) from None
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"cannot read {path}: {exc}") from None


def _write_json(path: str, data: Any, gid: int | None = None) -> None:
    """Replaces path atomically: a reader sees the old file or the new one, and a crash
    leaves one of them whole (written and synced before the rename). Root's alone
    (0600), or readable by group gid (0640)."""
    os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        if gid is not None:
            os.fchown(f.fileno(), 0, gid)
            os.fchmod(f.fileno(), 0o640)
        # dumps, not dump: only dumps takes the C encoder (json.dump writes through the
        # pure-Python one, seconds for the state of 10,000 rules).
        f.write(json.dumps(data, separators=(",", ":")))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _missing(directory: str) -> Dispatcher:
    raise RuntimeFailure(f"the dispatcher pinned in {directory} is gone: run 'bpfwall apply' again")


def _replace_pin(fd: int, path: str) -> None:
    """Pins fd at path, replacing what a scope pinned by an older version left there."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    libbpf.obj_pin(fd, path)


@dataclass
class ApplyReport:
    generation: int = 0
    attached: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_seconds: float = 0.0
    set_seconds: float = 0.0  # of load_seconds, filling the CIDR sets
    repairs: list[str] = field(default_factory=list)  # what an interrupted run left, and what was done
    confirm_token: str = ""  # of an apply --confirm: what its watchdog and confirm() look for
