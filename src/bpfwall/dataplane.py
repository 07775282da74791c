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
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import counters, libbpf, netns, setmaps, shared
from .cidrset import Element, format_element
from .compiler import Compiled, compile_ruleset
from .errors import InputError, RuntimeFailure
from .generation import CT_MAPS, SCOPE_MAPS, SET_MAPS, Generation
from .ruleset import Ruleset
from .setmaps import Fix, SetTables

PIN_ROOT = "/sys/fs/bpf/bpfwall"
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

    # --- state -------------------------------------------------------------------------------

    def read_state(self) -> State | None:
        data = _read_json(self.state_path)
        return None if data is None else State(**data)

    def require_state(self) -> State:
        state = self.read_state()
        if state is None or not state.interfaces:
            where = f" in network namespace '{self.ns}'" if self.ns else ""
            raise RuntimeFailure(f"bpfwall is not running{where}: nothing applied (see 'bpfwall apply')")
        return state

    def _write_state(self, state: State) -> None:
        _write_json(self.state_path, state.__dict__)

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
    def lock(self) -> Iterator[None]:
        """Serialises applies and downs. One lock for every scope: they are rare, and a
        lock file per scope would pile up in /run for namespaces long gone."""
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(STATE_ROOT, "lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def gen_dir(self, n: int) -> str:
        return os.path.join(self.pin_dir, f"gen-{n}")

    def link_pin(self, ifname: str, direction: str = "ingress") -> str:
        return os.path.join(self.pin_dir, f"{'link' if direction == 'ingress' else 'tcx'}-{ifname}")

    def open_generation(self, state: State | None = None, direction: str = "ingress") -> Generation:
        state = state or self.require_state()
        return Generation.open_pinned(os.path.join(self.gen_dir(state.generation), direction))

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
                _write_json(self.sets_path, {"generation": state.generation, "sets": changes})

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
            _write_json(self.sets_path, {"generation": state.generation, "sets": changes})
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
        return {name: libbpf.obj_get(p) for name, p in paths.items()}

    def _scope_maps_for(self, compiled: Compiled, report: ApplyReport) -> dict[str, int] | None:
        """The pinned scope tables to share, or None to make (and pin) new ones: the
        ban and scan tables are made small while no rule bans, and remade full-size
        when a rule set first needs them."""
        fds = self.open_pinned(SCOPE_MAPS)
        if fds is None:
            return None
        small = ((compiled.config.bans_enabled
                  and libbpf.map_info(fds["bans"]).max_entries < shared.MAX_BANS)
                 or (compiled.config.scan_ports
                     and libbpf.map_info(fds["scan_sources"]).max_entries < shared.SCAN_SOURCES))
        if not small:
            return fds
        for fd in fds.values():
            os.close(fd)
        report.notes.append("the ban table is made full-size; the packet log starts a new ring")
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
              compiled: dict[str, Compiled] | None = None) -> ApplyReport:
        """Puts ruleset in force on interfaces (and on every interface already attached).

        compiled: the ruleset compiled per direction (compile_all), if the caller has it.
        """
        require_root()
        ensure_bpffs()
        tables = compiled or compile_all(ruleset)
        compiled_in = tables["ingress"]
        report = ApplyReport()
        with self.lock(), netns.enter(self.ns):
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
            new_n = old.generation + 1
            new_dir = self.gen_dir(new_n)
            swapped: list[tuple[int, str]] = []  # (link fd, direction) already on the new generation
            log_fds: dict[str, int] | None = None
            # A block of counters per interface, in name order; beyond the map's blocks,
            # interfaces count in block 0 with any other.
            blocks = {name: (i + 1 if i + 1 < shared.MAX_IFACES else 0) for i, name in enumerate(sorted(targets))}
            by_ifindex = {targets[name]: b for name, b in blocks.items() if b}
            try:
                for compiled in tables.values():
                    compiled.config.generation = new_n  # log records name their generation
                log_fds = self._scope_maps_for(compiled_in, report)
                gens["ingress"] = Generation.load(compiled_in, known, ct_fds, log_fds=log_fds,
                                                  counter_blocks=by_ifindex)
                if uses_ct and ct_fds is None:  # the first table of this scope: pin it
                    os.makedirs(self.pin_dir, mode=0o700, exist_ok=True)
                    for name in CT_MAPS:
                        libbpf.obj_pin(gens["ingress"].map_fds[name], os.path.join(self.pin_dir, name))
                    ct_fds = self.open_ct_maps()
                if log_fds is None:  # the first generation of this scope: its ring is the scope's
                    os.makedirs(self.pin_dir, mode=0o700, exist_ok=True)
                    for name in SCOPE_MAPS:
                        path = os.path.join(self.pin_dir, name)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)  # a scope pinned by an older version lacks some
                        libbpf.obj_pin(gens["ingress"].map_fds[name], path)
                    log_fds = self.open_pinned(SCOPE_MAPS)
                set_fds = {name: gens["ingress"].map_fds[name] for name in SET_MAPS}
                if "egress" in tables:
                    gens["egress"] = Generation.load(tables["egress"], known, ct_fds, set_fds, log_fds,
                                                     by_ifindex)
                t1 = time.monotonic()
                setmaps.fill(set_fds, ruleset.cidr_sets, ruleset.set_slots())
                report.set_seconds = time.monotonic() - t1
                report.load_seconds = time.monotonic() - t0
                shutil.rmtree(new_dir, ignore_errors=True)  # a leftover of an interrupted apply
                for direction, gen in gens.items():
                    gen.pin(os.path.join(new_dir, direction))
                for name, fd in set_fds.items():
                    libbpf.obj_pin(fd, os.path.join(new_dir, name))
                state = State(netns=self.ns, generation=new_n, ruleset=ruleset.to_json(),
                              applied_at=time.time())
                for name, ifindex in targets.items():
                    state.interfaces[name] = self._attach(
                        gens, name, ifindex, old.interfaces.get(name), mode, swapped, report)
                    state.interfaces[name]["counter_block"] = blocks[name]
                # Read after the swap: the old generation counts no more packets.
                if old.ruleset is not None:
                    try:
                        state.carried = counters.carry_blocks(old.ruleset, self.counter_blocks(old),
                                                              state.ruleset)
                    except RuntimeFailure as exc:
                        report.notes.append(f"counters start from zero: {exc}")
                self._write_state(state)
            except BaseException:
                self._roll_back(old, swapped)
                shutil.rmtree(new_dir, ignore_errors=True)
                raise
            finally:
                for fd, _ in swapped:
                    os.close(fd)
                for gen in gens.values():
                    gen.close()
                for fd in [*(ct_fds or {}).values(), *(log_fds or {}).values()]:
                    os.close(fd)  # ours: libbpf keeps its own duplicates
            if not uses_ct:
                self._drop_ct_maps()
            for entry in os.listdir(self.pin_dir):
                if entry.startswith("gen-") and entry != f"gen-{new_n}":
                    shutil.rmtree(os.path.join(self.pin_dir, entry), ignore_errors=True)
        report.generation = new_n
        report.interfaces = state.interfaces
        return report

    def _attach(self, gens: dict[str, Generation], name: str, ifindex: int, old: dict[str, Any] | None,
                mode: str, swapped: list[tuple[int, str]], report: ApplyReport) -> dict[str, Any]:
        """Puts the new generation on one interface: XDP always, tcx egress when there is one."""
        info = {"ifindex": ifindex, "mode": self._attach_xdp(gens["ingress"], name, ifindex, old, mode,
                                                             swapped, report)}
        egress = gens.get("egress")
        pin = self.link_pin(name, "egress")
        if egress is None:
            self._detach(pin)  # the new rule set has nothing to do on egress
            info["egress"] = False
            return info
        fd = self._live_link(pin, ifindex)
        if fd is not None:
            libbpf.link_update(fd, egress.prog_fd)
            swapped.append((fd, "egress"))
        else:
            fd = libbpf.link_create(egress.prog_fd, ifindex, libbpf.BPF_TCX_EGRESS)
            try:
                libbpf.obj_pin(fd, pin)
            finally:
                os.close(fd)
        info["egress"] = True
        return info

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

    def _attach_xdp(self, gen: Generation, name: str, ifindex: int, old: dict[str, Any] | None,
                    mode: str, swapped: list[tuple[int, str]], report: ApplyReport) -> str:
        pin = self.link_pin(name)
        fd = self._live_link(pin, ifindex)
        if fd is not None:
            have = (old or {}).get("mode", "native")
            if mode not in ("auto", have):
                os.close(fd)
                raise RuntimeFailure(
                    f"{name} is attached in {have} mode; run 'bpfwall down -i {name}' first "
                    f"to change to {mode} (it leaves the interface open meanwhile)")
            libbpf.link_update(fd, gen.prog_fd)
            swapped.append((fd, "ingress"))
            report.swapped.append(name)
            return have
        tries = ["native", "generic"] if mode == "auto" else [mode]
        for i, m in enumerate(tries):
            try:
                fd = libbpf.link_create(gen.prog_fd, ifindex, libbpf.BPF_XDP, MODES[m])
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

    def _roll_back(self, old: State, swapped: list[tuple[int, str]]) -> None:
        """Points links that already took the new generation back at the old one."""
        if not swapped or not old.interfaces:
            return
        for direction in ("ingress", "egress"):
            try:
                prev = self.open_generation(old, direction)
            except RuntimeFailure:
                continue
            with prev:
                for fd, d in swapped:
                    if d == direction:
                        with contextlib.suppress(libbpf.BpfError):
                            libbpf.link_update(fd, prev.prog_fd)

    # --- down --------------------------------------------------------------------------------

    def down(self, interfaces: list[str] | None = None) -> list[str]:
        """Detaches from interfaces (all when None); removes every pin once none is left."""
        require_root()
        removed = []
        with self.lock():
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
                shutil.rmtree(self.pin_dir, ignore_errors=True)
                for path in (self.state_path, self.sets_path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                with contextlib.suppress(OSError):
                    os.rmdir(PIN_ROOT)  # only if no other scope is left
        return removed

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.read_state()
        out: dict[str, Any] = {"netns": self.ns, "running": bool(state and state.interfaces)}
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
        )
        for name, info in state.interfaces.items():
            entry = {"name": name, "ifindex": info["ifindex"], "mode": info["mode"],
                     "egress": info.get("egress", False)}
            pin = self.link_pin(name)
            try:
                fd = libbpf.obj_get(pin)
            except libbpf.BpfError:
                entry["attached"] = False
                entry["problem"] = "link pin missing"
            else:
                try:
                    li = libbpf.link_info(fd)
                    entry["attached"] = li.ifindex != 0
                    entry["program_id"] = li.prog_id
                    if not entry["attached"]:
                        entry["problem"] = "interface is gone"
                finally:
                    os.close(fd)
            out["interfaces"].append(entry)
        return out


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
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"cannot read {path}: {exc}") from None


def _write_json(path: str, data: Any) -> None:
    """Replaces path atomically: a reader sees the old file or the new one."""
    os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@dataclass
class ApplyReport:
    generation: int = 0
    attached: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_seconds: float = 0.0
    set_seconds: float = 0.0  # of load_seconds, filling the CIDR sets
