"""Changing a scope: the apply transaction, down, repair, confirm and rollback.

An apply loads generation N+1, points every link at it through the dispatcher (atomic:
one map write flips every interface and both directions), then drops generation N.
Each step is named for faults.step, so a test can kill the run at every one of them; a
journal written before anything a packet could see lets the next run finish or undo
what a killed one left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import access, atconnect, counters, faults, generation, ifinfo, libbpf, links, netns, setmaps, shared
from .cidrset import Element, format_element
from .compiler import Compiled, compile_ruleset
from .dispatcher import DIRECTIONS, HOOKS, Dispatcher
from .errors import InputError, RuntimeFailure
from .generation import Generation
from .maps import CT_MAPS, SCOPE_MAPS, SET_MAPS
from .ruleset import Ruleset
from .scope import (
    IFACE_PINS,
    LINK_PINS,
    PIN_ROOT,
    Scope,
    State,
    encode_json,
    ensure_bpffs,
    missing_dispatcher,
    read_json,
    require_root,
    write_json,
)
from .setmaps import Fix, SetTables


def compile_all(ruleset: Ruleset) -> dict[str, Compiled]:
    """The tables of each direction that needs a program (ingress always)."""
    out = {"ingress": compile_ruleset(ruleset, "ingress")}
    if ruleset.needs_egress():
        out["egress"] = compile_ruleset(ruleset, "egress")
    return out


def target_interfaces(scope: Scope, ruleset: Ruleset, given: list[str] | tuple[str, ...], how: str) -> list[str]:
    """The interfaces an apply protects: those given, else the rule file's 'interfaces:',
    else those in force. how says how to give one, for the error when there are none."""
    targets = list(given) or list(ruleset.interfaces)
    if not targets:
        state = scope.read_state()
        targets = list(state.interfaces) if state else []
    if not targets:
        raise InputError(f"no interface to protect: give {how}")
    return targets


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
    reused: bool = False  # the rule set went into the idle generation's tables: no program loaded
    generic_why: dict[str, str] = field(default_factory=dict)  # interface -> why XDP runs generic there


def set_change(scope: Scope, name: str, elements: list[Element], add: bool,
               guard: bool = True) -> tuple[int, int]:
    """Adds (or removes) elements of a CIDR set in force, all at once.

    Returns (changed, unchanged): elements already present (for add) are
    left alone; removing an element that is not in the set changes nothing
    and is an error. guard: first the lockout guard of apply, which refuses a
    change that would cut one of the host's SSH sessions (RuntimeFailure).
    """
    require_root()
    with scope.lock(), netns.enter(scope.ns):
        state = scope.require_state()
        slot = scope.cidr_set_slot(name, state)
        changes = scope.set_changes(state)
        meta = changes[name]

        def record(fix: Fix) -> None:
            meta["fix"] = fix.to_json()
            write_json(scope.sets_path, {"generation": state.generation, "sets": changes},
                        access.group_id(state.group))

        with SetTables(scope.gen_dir(state.generation)) as tables:
            tables.level(slot, Fix.from_json(meta.get("fix")))
            set_state = tables.state(slot)
            present = {e for e in elements if tables.contains(slot, e, set_state)}
            if add:
                todo = list(dict.fromkeys(e for e in elements if e not in present))
            else:
                missing = [e for e in elements if e not in present]
                if missing:
                    raise InputError(f"not in set '{name}': " + ", ".join(
                        format_element(e) for e in missing[:5]) + (" ..." if len(missing) > 5 else ""))
                todo = list(dict.fromkeys(elements))
            if guard and todo:
                _guard_set_change(scope, state, tables, name, todo, add)
            tables.change(slot, todo if add else [], [] if add else todo, record)
        meta["size"] = meta.get("size", 0) + (len(todo) if add else -len(todo))
        write_json(scope.sets_path, {"generation": state.generation, "sets": changes},
                    access.group_id(state.group))
    return len(todo), len(elements) - len(todo)


def _guard_set_change(scope: Scope, state: State, tables: SetTables, name: str, todo: list[Element],
                      add: bool) -> None:
    """apply's lockout guard for a set change: the rule set in force, its sets as the
    kernel's tables hold them and this one as the change would leave it, judged for every
    SSH session of the host. The rule file is read only when there is a session to cut."""
    from . import lockout  # the reference model it judges by: only for a set change

    try:
        if not lockout.sessions_here():
            return
    except lockout.LookupFailed:
        pass  # the guard says it cannot look, and refuses
    ruleset = state.rules()
    views: dict[str, Any] = {n: tables.view(s) for n, s in ruleset.set_slots().items()}
    views[name] = setmaps.ChangedSet(views[name], todo, add)
    ruleset.cidr_sets = views
    lockout.guard_scope(scope, ruleset, state.interfaces, lockout.SET_ADVICE,
                        f"{'add to' if add else 'remove from'} set '{name}'")


def _scope_maps_for(scope: Scope, compiled: Compiled, report: ApplyReport) -> dict[str, int] | None:
    """The pinned scope tables to share, or None to make (and pin) new ones: the
    ban and scan tables are made small while no rule bans, and remade full-size
    when a rule set first needs them."""
    fds = scope.open_pinned(SCOPE_MAPS)
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


def drop_ct_maps(scope: Scope) -> None:
    for name in CT_MAPS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(scope.pin_dir, name))


def _ct_maps_for(scope: Scope, compiled: Compiled, uses_ct: bool, report: ApplyReport) -> dict[str, int] | None:
    """The pinned connection table to share, if it fits; else None (the first generation
    loaded creates one, which apply then pins)."""
    fds = scope.open_ct_maps()
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
        drop_ct_maps(scope)
        return None
    return fds


def apply(scope: Scope, ruleset: Ruleset, interfaces: list[str], mode: str = "native",
          compiled: dict[str, Compiled] | None = None, confirm: float | None = None) -> ApplyReport:
    """Puts ruleset in force on interfaces (and on every interface already attached).

    compiled: the ruleset compiled per direction (compile_all), if the caller has it.
    confirm: seconds to wait for `confirm()` before the previous rule set is put back;
    a detached watchdog process does that even if this process dies.

    The steps, each a method of _Apply named for faults.step: load and pin the new
    generation, write a journal of what is about to change, put its programs in the
    dispatcher's idle slots, attach new links to the dispatcher, flip the dispatcher
    (the one moment the rule set changes, everywhere at once), record the state, then
    remove the old generation. A run killed before the flip leaves the old rule set in
    force, after it the new one; the next apply, status or down finishes or undoes
    what the journal says was under way.
    """
    require_root()
    ensure_bpffs()
    run = _Apply(scope, ruleset, compiled or compile_all(ruleset), mode, confirm)
    faults.step("compiled")
    with scope.lock(), netns.enter(scope.ns):
        faults.step("locked")
        run.prepare(interfaces)
        run.disp, created = Dispatcher.open_or_create(scope.dispatch_dir)
        if not run.disp.current:  # made by an older bpfwall: made anew, and the links moved to it
            run.disp.close()
            run.disp, created = Dispatcher.create(scope.dispatch_dir), True
        try:
            try:
                if created and run.old.generation:
                    run.late = links.adopt(scope, run.disp, run.old)  # links of an older bpfwall
                for step in (run.load, run.pin, run.write_journal, run.stage, run.attach, run.arm,
                             run.complete_journal, run.flip, run.commit):
                    step()
            except BaseException:
                run.take_back()
                raise
            finally:
                run.close()
            if confirm is None:
                finish(scope, run.disp, run.state, run.old.generation)
                faults.step("cleaned")
        finally:
            run.disp.close()
    run.report.generation = run.new_n
    run.report.interfaces = run.state.interfaces
    return run.report


class _Apply:
    """One apply under way: what it has made so far, for the next step or the undo."""

    def __init__(self, scope: Scope, ruleset: Ruleset, tables: dict[str, Compiled], mode: str,
                 confirm: float | None) -> None:
        self.scope, self.ruleset, self.tables, self.mode, self.confirm = scope, ruleset, tables, mode, confirm
        self.report = ApplyReport()
        self.old = State(netns=scope.ns)
        self.targets: dict[str, int] = {}  # interfaces to protect -> ifindex
        self.known: dict[str, int] = {}  # interfaces the rules name -> ifindex
        self.disp: Dispatcher
        self.new_n = 0
        self.gens: dict[str, Generation] = {}
        self.ct_fds: dict[str, int] | None = None
        self.log_fds: dict[str, int] | None = None
        self.set_fds: dict[str, int] = {}
        self.journal: dict[str, Any] = {}
        self.flipped = False
        self.state = State(netns=scope.ns)
        self.blocks: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self.iface_slots: dict[int, int] = {}
        self.ruleset_text: str | None = None  # the new rule set as JSON, encoded once
        self.at_connect = atconnect.ConnectScope()  # where connect() and sendmsg() are judged
        self.late: set[str] = set()  # directions whose links move after the flip (links.adopt)

    def prepare(self, interfaces: list[str]) -> None:
        """Repairs what an interrupted run left, and finds the interfaces; nothing changes yet."""
        scope, report = self.scope, self.report
        repair(scope, report)
        pending = read_json(scope.confirm_path)
        if pending is not None:
            left = max(0, int(pending["deadline"] - time.time()))
            raise RuntimeFailure(
                f"generation {pending['generation']} awaits confirmation ({left} s left): run "
                f"'bpfwall confirm{scope.ns_arg()}' to keep it, or wait for the rollback")
        self.old = scope.read_state() or State(netns=scope.ns)
        for name in interfaces:
            self.targets[name] = netns.ifindex(name, scope.ns)
        for name in self.old.interfaces:
            if name in self.targets:
                continue
            try:
                self.targets[name] = netns.ifindex(name, scope.ns)
            except RuntimeFailure:
                report.notes.append(f"{name}: interface is gone; forgetting it")
                for direction in ("ingress", "egress"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(scope.link_pin(name, direction))
        for name in sorted({n for r in self.ruleset.rules for n in (r.interfaces or ())}):
            try:
                self.known[name] = netns.ifindex(name, scope.ns)
            except RuntimeFailure:
                report.notes.append(f"rules name interface '{name}', which does not exist here")
        if "syn_cookies" in self.ruleset.conntrack:
            check_syn_cookie_host(scope.ns)
        # A block of counters per interface, in name order; beyond the map's blocks,
        # interfaces count in block 0 with any other.
        self.blocks = {name: (i + 1 if i + 1 < shared.MAX_IFACES else 0)
                       for i, name in enumerate(sorted(self.targets))}
        # An interface keeps its kind while it exists: asked of the kernel only for one
        # that is new here or was made again (another ifindex) since the last apply.
        self.kinds = {name: info["kind"] for name, info in self.old.interfaces.items()
                      if "kind" in info and info.get("ifindex") == self.targets.get(name)}
        unknown = sorted(name for name in self.targets if name not in self.kinds)
        if unknown:
            self.kinds.update(ifinfo.kinds(unknown, scope.ns))
        slots = {self.targets[name]: b | (shared.IFACE_ANSWER_REDIRECT if self.kinds.get(name) == "veth" else 0)
                 for name, b in self.blocks.items()}
        self.iface_slots = {ifindex: value for ifindex, value in slots.items() if value}

    def load(self) -> None:
        """Puts the new rule set into a generation's tables: the idle generation's, refilled,
        when the rule set fits the programs loaded there; else newly loaded programs."""
        report = self.report
        t0 = time.monotonic()
        self.open_scope_maps()
        self.new_n = max(self.old.generation, self.disp.active()) + 1
        if self._refill_idle():
            report.reused = True
        else:
            self._load_new()
        self._judge_connections()
        t1 = time.monotonic()
        setmaps.fill(self.set_fds, self.ruleset.cidr_sets, self.ruleset.set_slots())
        report.set_seconds = time.monotonic() - t1
        report.load_seconds = time.monotonic() - t0
        faults.step("loaded")

    def _judge_connections(self) -> None:
        """Tells the new egress programs where connections are judged at connect() and
        sendmsg() (atconnect), or says why they are not."""
        egress = self.gens.get("egress")
        at = self.at_connect = atconnect.connect_scope(self.tables.get("egress"), list(self.targets),
                                                       self.scope.ns)
        if at.why_not:
            self.report.notes.append(f"connections are judged by their packets only, not at connect(): "
                                     f"{at.why_not}")
        if egress is not None and egress.hook_fds:
            egress.judge_connections_in(at.netns_cookie, at.local)

    def open_scope_maps(self) -> None:
        """The scope's connection and log tables that the new programs share, where they fit."""
        compiled_in = self.tables["ingress"]
        self.ct_fds = _ct_maps_for(self.scope, compiled_in, self.ruleset.uses_ct(), self.report)
        self.log_fds = _scope_maps_for(self.scope, compiled_in, self.report)

    def _refill_idle(self) -> bool:
        """The idle generation (kept by the last apply, in the dispatcher slot this one
        takes) with the new rule set written into its tables, when its programs fit it.
        Its pins move to the new generation's directory first, so a run killed from here
        on leaves them where the journal and repair look. No packet runs these programs
        until the flip."""
        scope, idle = self.scope, self.old.idle
        if not idle or idle.get("generation", 0) + 2 != self.new_n or os.environ.get("BPFWALL_NO_REFILL"):
            return False
        idle_dir, new_dir = scope.gen_dir(idle["generation"]), scope.gen_dir(self.new_n)
        shapes = idle.get("shapes", {})
        fds = {**(self.ct_fds or {}), **(self.log_fds or {})}
        shared_now = generation.shared_ids({n: fds[n] for n in generation.scope_tables(self.tables["ingress"])
                                            if n in fds})
        if (set(shapes) != set(self.tables) or not os.path.isdir(idle_dir)
                or not all(generation.fits(shapes[d], generation.layout(c, self.iface_slots, self.log_fds),
                                           shared_now) for d, c in self.tables.items())):
            return False
        shutil.rmtree(new_dir, ignore_errors=True)  # a leftover of an interrupted apply
        os.rename(idle_dir, new_dir)
        for direction, compiled in self.tables.items():
            gen = self.gens[direction] = Generation.open_for_refill(os.path.join(new_dir, direction), new_dir)
            gen.shape = shapes[direction]
            gen.refill(compiled, self.known, self.iface_slots, self.new_n, sets=direction == "ingress")
        self.set_fds = {name: self.gens["ingress"].map_fds[name] for name in SET_MAPS}
        return True

    def _load_new(self) -> None:
        scope, tables = self.scope, self.tables
        compiled_in = tables["ingress"]
        uses_ct = self.ruleset.uses_ct()
        ingress = self.gens["ingress"] = Generation.load(compiled_in, self.known, self.ct_fds,
                                                         log_fds=self.log_fds, iface_slots=self.iface_slots,
                                                         generation=self.new_n)
        if uses_ct and self.ct_fds is None:  # the first table of this scope: pin it
            for name in CT_MAPS:
                _replace_pin(ingress.map_fds[name], os.path.join(scope.pin_dir, name))
            self.ct_fds = scope.open_ct_maps()
        if self.log_fds is None:  # the first generation of this scope: its ring is the scope's
            for name in SCOPE_MAPS:
                _replace_pin(ingress.map_fds[name], os.path.join(scope.pin_dir, name))
            self.log_fds = scope.open_pinned(SCOPE_MAPS)
        self.set_fds = {name: ingress.map_fds[name] for name in SET_MAPS}
        if "egress" in tables:
            self.gens["egress"] = Generation.load(tables["egress"], self.known, self.ct_fds, self.set_fds,
                                                  self.log_fds, self.iface_slots, self.new_n)

    def pin(self) -> None:
        new_dir = self.scope.gen_dir(self.new_n)
        if self.report.reused:  # pinned there already
            faults.step("pinned")
            return
        shutil.rmtree(new_dir, ignore_errors=True)  # a leftover of an interrupted apply
        for direction, gen in self.gens.items():
            gen.pin(os.path.join(new_dir, direction))
        for name, fd in self.set_fds.items():
            libbpf.obj_pin(fd, os.path.join(new_dir, name))
        faults.step("pinned")

    def write_journal(self) -> None:
        """Records what is about to change, before anything a packet could see does."""
        scope = self.scope
        self.state = State(netns=scope.ns, generation=self.new_n, ruleset=self.ruleset.to_json(),
                           applied_at=time.time(), group=self.ruleset.group,
                           shapes={d: gen.shape for d, gen in self.gens.items()},
                           at_connect="yes" if self.at_connect.netns_cookie else self.at_connect.why_not)
        if self.confirm is None and _keeps_idle(scope, self.old):
            self.state.idle = {"generation": self.old.generation, "shapes": self.old.shapes}
        new_links = [(name, "ingress") for name in self.targets if not scope.has_link(name, "ingress")]
        if "egress" in self.gens:
            new_links += [(name, "egress") for name in self.targets if not scope.has_link(name, "egress")]
        self.journal = {"generation": self.new_n, "previous": self.old.generation, "new_links": new_links}
        write_json(scope.journal_path, self.journal)
        faults.step("journal")

    def stage(self) -> None:
        """The new programs into the dispatcher's idle slots: nothing runs them yet."""
        for direction in DIRECTIONS:
            gen = self.gens.get(direction)
            self.disp.stage(direction, self.new_n, gen.prog_fd if gen else None)
        hooks = self.gens["egress"].hook_fds if "egress" in self.gens and self.at_connect.netns_cookie else {}
        for hook in HOOKS:
            self.disp.stage(hook, self.new_n, hooks.get(hook))
        faults.step("staged")

    def attach(self) -> None:
        """Links the dispatcher to interfaces that have no link yet (a link runs the old
        generation until the flip)."""
        scope, old, report = self.scope, self.old, self.report
        for name, ifindex in self.targets.items():
            info = links.attach(scope, self.disp, name, ifindex, old.interfaces.get(name), self.mode,
                                "egress" in self.gens, report, frozenset(self.late), self.kinds.get(name, ""))
            info["counter_block"] = self.blocks[name]
            info["kind"] = self.kinds.get(name, "")
            # What the interface had failed to deliver before: stats counts from here.
            before = (old.interfaces.get(name) or {}).get("undelivered_base")
            info["undelivered_base"] = before if name in report.swapped else ifinfo.undelivered(name, scope.ns)
            self.state.interfaces[name] = info
            faults.step(f"attached:{name}")
        if self.at_connect.netns_cookie:
            links.attach_hooks(scope, self.disp)  # they run the old generation (or nothing) until the flip
            faults.step("attached:hooks")
        self.state.dispatcher = {d: self.disp.dispatcher_id(d) for d in DIRECTIONS}
        self.state.programs = {d: self.disp.program_id(d, self.new_n) for d in DIRECTIONS}

    def arm(self) -> None:
        """With --confirm: the watchdog that rolls back unless confirmed."""
        self.journal["state"] = self.state.__dict__
        if self.confirm is not None:
            self.report.confirm_token = _arm_rollback(self.scope, self.journal, self.old, self.confirm)
            faults.step("armed")

    def complete_journal(self) -> None:
        """The journal now holds the new state: a run killed after the flip is finished from it."""
        self.ruleset_text = encode_json(self.state.ruleset or {})
        state_text = encode_json(self.state.__dict__, {"ruleset": self.ruleset_text})
        write_json(self.scope.journal_path, self.journal, encoded={"state": state_text})
        faults.step("journal-complete")

    def flip(self) -> None:
        """The one moment the rule set changes, on every interface and in both directions."""
        self.disp.flip(self.new_n)
        self.flipped = True
        if self.late:
            links.move_late(self.scope, self.disp, list(self.targets), self.late)
        faults.step("flipped")

    def commit(self) -> None:
        """Carries the counters over and records the new state."""
        scope, old, state, report = self.scope, self.old, self.state, self.report
        # Read after the flip: the old generation counts no more packets.
        if old.ruleset is not None:
            try:
                state.carried = counters.carry_blocks(old.ruleset, scope.counter_blocks(old), state.ruleset)
            except RuntimeFailure as exc:
                report.notes.append(f"counters start from zero: {exc}")
        commit(scope, state, self.ruleset_text)
        faults.step("committed")
        report.notes += scope.share(state)
        for name, info in state.interfaces.items():
            problem = scope.answer_problem(self.ruleset, name, info)
            if problem:
                report.notes.append(f"{name}: {problem}")

    def take_back(self) -> None:
        """A step failed: the old rule set in force again, nothing of the new one left."""
        if self.journal:
            undo(self.scope, self.disp, self.journal, self.old, self.flipped)
        if self.new_n:
            shutil.rmtree(self.scope.gen_dir(self.new_n), ignore_errors=True)
        if not self.old.interfaces:
            remove_all(self.scope)  # nothing was protected before: leave nothing

    def close(self) -> None:
        for gen in self.gens.values():
            gen.close()
        for fd in [*(self.ct_fds or {}).values(), *(self.log_fds or {}).values()]:
            os.close(fd)  # ours: libbpf keeps its own duplicates
        self.gens, self.ct_fds, self.log_fds = {}, None, None


# The idle generation is kept only while its sets are small: emptying a large set would
# cost what loading anew does, and a second copy of it would double the sets' memory.
REFILL_SET_LIMIT = 65536


def preload_idle(scope: Scope, ruleset: Ruleset, tables: dict[str, Compiled], generation: int) -> bool:
    """Loads a second copy of generation's programs (ruleset, compiled as tables) as the idle
    generation, when it has none, so that the next apply refills it instead of waiting for
    the verifier. For a resident process (the agent), after an apply that had to load anew:
    it spends that time while no change waits. Nothing a packet sees changes. Returns
    whether it loaded one; False when another apply came between or one is under way.

    The copy is pinned as generation - 1 and recorded as the state's idle generation; a run
    killed between the two leaves pins no state refers to, which the next apply removes."""
    require_root()
    ensure_bpffs()
    with scope.lock(), netns.enter(scope.ns):
        state = scope.read_state()
        if (state is None or state.generation != generation or state.idle or not state.shapes
                or os.path.exists(scope.journal_path) or read_json(scope.confirm_path) is not None):
            return False
        run = _Apply(scope, ruleset, tables, "native", None)
        run.prepare(list(state.interfaces))
        run.new_n = generation - 1
        idle_dir = scope.gen_dir(run.new_n)
        try:
            run.open_scope_maps()
            run._load_new()
            run.pin()
            state.idle = {"generation": run.new_n, "shapes": {d: gen.shape for d, gen in run.gens.items()}}
            scope.write_state(state)
        except BaseException:
            shutil.rmtree(idle_dir, ignore_errors=True)
            raise
        finally:
            run.close()
        return True


def _keeps_idle(scope: Scope, old: State) -> bool:
    """Whether the generation an apply replaces stays loaded as the idle one: it has
    programs whose shape was recorded, and its sets are small. Only the generation in
    force changes its sets (`bpfwall set`), so an idle one's stay as small as they were."""
    if not old.generation or not old.shapes:
        return False
    sizes = sum(entry.get("size", 0) for entry in scope.set_changes(old).values())
    return sizes <= REFILL_SET_LIMIT


def commit(scope: Scope, state: State, ruleset_text: str | None = None) -> None:
    """Records the generation in force; the journal's work is done. ruleset_text:
    state.ruleset encoded already (encode_json)."""
    scope.write_state(state, ruleset_text)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(scope.journal_path)


def finish(scope: Scope, disp: Dispatcher, state: State, previous: int) -> None:
    """Removes what only the previous generation used, once the new one is here to stay."""
    idle = state.idle.get("generation")
    if previous and previous != state.generation and previous != idle:
        disp.clear(previous)
    for name, info in state.interfaces.items():
        if not info.get("egress"):
            links.detach(scope.link_pin(name, "egress"))  # nothing to do on egress now
    links.prune_hooks(scope, disp)
    if not any(r.get("ct") for r in (state.ruleset or {}).get("rules", [])):
        drop_ct_maps(scope)  # (read from the JSON: a Ruleset of 10,000 rules is slow to rebuild)
    for entry in os.listdir(scope.pin_dir):
        if entry.startswith("gen-") and entry not in (f"gen-{state.generation}", f"gen-{idle}"):
            shutil.rmtree(os.path.join(scope.pin_dir, entry), ignore_errors=True)


def undo(scope: Scope, disp: Dispatcher, journal: dict[str, Any], old: State, flipped: bool) -> None:
    """Takes back an apply that did not complete: the previous generation in force
    again, the new one's programs and links gone."""
    generation = journal["generation"]
    if flipped or disp.active() == generation:
        disp.flip(journal["previous"])
    take_back(scope, disp, generation, journal.get("new_links", []))
    pending = read_json(scope.confirm_path)
    if pending is not None and pending.get("generation") == generation:
        os.unlink(scope.confirm_path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(scope.journal_path)
    if not old.interfaces:
        remove_all(scope)


def take_back(scope: Scope, disp: Dispatcher, generation: int, new_links: list[list[str]]) -> None:
    """Removes a generation no longer in force: its programs, the links its apply
    added, its pins. Shared by an undone apply and an expired confirm."""
    with contextlib.suppress(RuntimeFailure, libbpf.BpfError):
        disp.clear(generation)
    for name, direction in new_links:
        links.detach(scope.link_pin(name, direction))
    links.prune_hooks(scope, disp)
    shutil.rmtree(scope.gen_dir(generation), ignore_errors=True)


def down(scope: Scope, interfaces: list[str] | None = None, report: ApplyReport | None = None) -> list[str]:
    """Detaches from interfaces (all when None); removes every pin once none is left."""
    require_root()
    report = report or ApplyReport()
    removed = []
    with scope.lock():
        if interfaces:
            with netns.enter(scope.ns):
                repair(scope, report)
        state = scope.read_state() or State(netns=scope.ns)
        names = list(interfaces) if interfaces else list(state.interfaces)
        if not interfaces and os.path.isdir(scope.pin_dir):
            names += [e.split("-", 1)[1] for e in os.listdir(scope.pin_dir)
                      if e.startswith(IFACE_PINS) and e.split("-", 1)[1] not in names]
        for name in names:
            detached = links.detach(scope.link_pin(name))
            links.detach(scope.link_pin(name, "egress"))
            if detached:
                removed.append(name)
            state.interfaces.pop(name, None)
        if state.interfaces:
            scope.write_state(state)
        else:
            remove_all(scope)
    return removed


def remove_all(scope: Scope) -> None:
    """Everything of this scope: pins (the dispatcher, generations, tables) and state."""
    if os.path.isdir(scope.pin_dir):
        for entry in os.listdir(scope.pin_dir):
            if entry.startswith(LINK_PINS):
                links.detach(os.path.join(scope.pin_dir, entry))
    shutil.rmtree(scope.pin_dir, ignore_errors=True)
    for path in (scope.state_path, scope.summary_path, scope.sets_path, scope.journal_path, scope.confirm_path,
                 scope.state_path + ".tmp", scope.summary_path + ".tmp",
                 *([scope.lock_path] if scope.ns else [])):  # held by this run: see Scope.lock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(PIN_ROOT)  # only if no other scope is left


def repair(scope: Scope, report: ApplyReport) -> None:
    """Finishes or undoes what an interrupted run left, and says what it did. Called
    with the lock held, inside the namespace, by apply, status (as root) and down."""
    disp = Dispatcher.open(scope.dispatch_dir)
    try:
        pending = read_json(scope.confirm_path)
        if pending is not None and pending["deadline"] <= time.time():
            if disp is not None:
                _expire(scope, disp, pending, report)
            else:
                os.unlink(scope.confirm_path)
        journal = read_json(scope.journal_path)
        state = scope.read_state() or State(netns=scope.ns)
        if journal is not None:
            active = disp.active() if disp else 0
            if disp is not None and active == journal["generation"] and "state" in journal:
                new = State(**journal["state"])
                commit(scope, new)
                report.repairs.append(f"an interrupted apply had put generation {active} in force: "
                                      "finished it")
                if read_json(scope.confirm_path) is None:
                    finish(scope, disp, new, journal["previous"])
                state = new
            else:
                if disp is not None:
                    undo(scope, disp, journal, state, flipped=False)
                else:
                    shutil.rmtree(scope.gen_dir(journal["generation"]), ignore_errors=True)
                    os.unlink(scope.journal_path)
                report.repairs.append(
                    f"an interrupted apply of generation {journal['generation']} was undone; "
                    + (f"generation {state.generation} stays in force" if state.generation
                       else "nothing was in force before it"))
        if not state.interfaces and read_json(scope.journal_path) is None:
            _remove_orphans(scope, report)
        else:
            _remove_stale(scope, disp, state, report)
    finally:
        if disp is not None:
            disp.close()


def _remove_orphans(scope: Scope, report: ApplyReport) -> None:
    """Pins with no state: a first apply killed before its journal. No link points at
    them (links come after the journal), so they go, whole."""
    if os.path.isdir(scope.pin_dir) and not any(
            e.startswith(LINK_PINS) for e in os.listdir(scope.pin_dir)):
        remove_all(scope)
        report.repairs.append("removed the pins of a first apply that did not finish")


def _remove_stale(scope: Scope, disp: Dispatcher | None, state: State, report: ApplyReport) -> None:
    """Generations no state refers to: left by a run killed before its journal."""
    if not os.path.isdir(scope.pin_dir):
        return
    pending = read_json(scope.confirm_path)
    keep = {state.generation, *([pending["previous"]["generation"]] if pending else []),
            *([state.idle["generation"]] if state.idle else [])}
    stale = [e for e in os.listdir(scope.pin_dir)
             if e.startswith("gen-") and e[4:].isdigit() and int(e[4:]) not in keep]
    for entry in stale:
        shutil.rmtree(os.path.join(scope.pin_dir, entry), ignore_errors=True)
    if disp is not None and not pending and state.generation and not state.idle:
        idle = state.generation + 1  # the other slot: nothing belongs in it now
        if any(disp.program_id(d, idle) for d in DIRECTIONS):
            disp.clear(idle)
            stale.append("its programs")
    if stale:
        report.repairs.append("removed what an interrupted apply left: " + ", ".join(stale))


def _arm_rollback(scope: Scope, journal: dict[str, Any], old: State, seconds: float) -> str:
    """Records how to put the previous rule set back and starts a watchdog that does it
    at the deadline unless confirm() comes first. The watchdog is a process of its own
    session: it outlives this one, the terminal and the SSH connection."""
    token = secrets.token_hex(8)
    write_json(scope.confirm_path, {
        "token": token, "deadline": time.time() + seconds, "seconds": seconds,
        "generation": journal["generation"], "previous": old.__dict__,
        "new_links": journal["new_links"]})
    subprocess.Popen(
        [sys.executable, "-m", "bpfwall.watchdog", scope.ns or "", token],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd="/")
    return token


def confirm(scope: Scope) -> int:
    """Keeps the generation that awaits confirmation; returns its number."""
    require_root()
    report = ApplyReport()
    with scope.lock(), netns.enter(scope.ns):
        repair(scope, report)
        pending = read_json(scope.confirm_path)
        if pending is None:
            raise RuntimeFailure("nothing awaits confirmation"
                                 + ("; " + "; ".join(report.repairs) if report.repairs else ""))
        state = scope.require_state()
        with Dispatcher.open(scope.dispatch_dir) or missing_dispatcher(scope.dispatch_dir) as disp:
            finish(scope, disp, state, pending["previous"]["generation"])
        os.unlink(scope.confirm_path)
        return pending["generation"]


def expire(scope: Scope, token: str) -> str | None:
    """The watchdog's deadline: rolls back if the apply of `token` is still unconfirmed.
    Returns what was done, or None when there was nothing to do."""
    report = ApplyReport()
    with scope.lock(), netns.enter(scope.ns):
        pending = read_json(scope.confirm_path)
        if pending is None or pending["token"] != token:
            return None
        with Dispatcher.open(scope.dispatch_dir) or missing_dispatcher(scope.dispatch_dir) as disp:
            return _expire(scope, disp, pending, report)


def _expire(scope: Scope, disp: Dispatcher, pending: dict[str, Any], report: ApplyReport) -> str:
    previous = State(**pending["previous"])
    generation = pending["generation"]
    disp.flip(previous.generation)
    take_back(scope, disp, generation, pending.get("new_links", []))
    os.unlink(scope.confirm_path)
    what = (f"generation {generation} was not confirmed within {pending['seconds']:g} s: "
            + (f"rolled back to generation {previous.generation}" if previous.interfaces
               else "removed (nothing was in force before it)"))
    if previous.interfaces:
        previous.notice = what + time.strftime(" at %Y-%m-%dT%H:%M:%S%z")
        scope.write_state(previous)
        scope.share(previous)
    else:
        remove_all(scope)
    report.repairs.append(what)
    return what


def status(scope: Scope) -> dict[str, Any]:
    """What is in force and whether each link is alive. As root it first repairs what
    an interrupted run left (and lists it under "repairs"); a reader without root gets
    what the state file and netlink tell (the links' pins are root's)."""
    report = ApplyReport()
    root = os.geteuid() == 0
    if root:
        with scope.lock(), netns.enter(scope.ns):
            repair(scope, report)
    return scope.describe(report.repairs)


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


def _replace_pin(fd: int, path: str) -> None:
    """Pins fd at path, replacing what a scope pinned by an older version left there."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    libbpf.obj_pin(fd, path)


def await_confirmation(scope: Scope, token: str, keep_now: Callable[[float], bool] | None = None) -> str | None:
    """Waits for the apply of `token` to be kept or to run out of time; the one wait of
    both `apply --confirm` and the watchdog. keep_now(seconds) is asked each round, for up
    to that long, whether to keep it now (Enter on the terminal, say). At the deadline the
    apply is rolled back here, whoever gets there first. Returns None when it was kept
    (by keep_now, by `bpfwall confirm`) or a newer apply replaced it; else what the
    rollback did."""
    while True:
        pending = scope.pending_confirm()
        if pending is None or pending.get("token") != token:
            return None
        left = pending["deadline"] - time.time()
        if left <= 0:
            what = expire(scope, token)
            if what:
                return what
            continue  # another run got there first: the next round reads what it did
        if keep_now is None:
            time.sleep(min(left, 1.0))
        elif keep_now(min(left, 0.2)):
            confirm(scope)
            return None
