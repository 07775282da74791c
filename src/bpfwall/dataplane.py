"""Load, pin, attach, swap generations, and read back what is running.

Everything bpfwall leaves on a host lives in one scope per network namespace:

    /sys/fs/bpf/bpfwall/<scope>/gen-<N>/{prog,counters}         the running generation
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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import libbpf, netns
from .compiler import Compiled, compile_ruleset
from .errors import RuntimeFailure
from .generation import Generation
from .ruleset import Ruleset

PIN_ROOT = "/sys/fs/bpf/bpfwall"
STATE_ROOT = "/run/bpfwall"
MODES = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}


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

    # --- state -------------------------------------------------------------------------------

    def read_state(self) -> State | None:
        try:
            with open(self.state_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"cannot read {self.state_path}: {exc}") from None
        return State(**data)

    def require_state(self) -> State:
        state = self.read_state()
        if state is None or not state.interfaces:
            where = f" in network namespace '{self.ns}'" if self.ns else ""
            raise RuntimeFailure(f"bpfwall is not running{where}: nothing applied (see 'bpfwall apply')")
        return state

    def _write_state(self, state: State) -> None:
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state.__dict__, f)
        os.replace(tmp, self.state_path)

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

    def link_pin(self, ifname: str) -> str:
        return os.path.join(self.pin_dir, f"link-{ifname}")

    def open_generation(self, state: State | None = None) -> Generation:
        state = state or self.require_state()
        return Generation.open_pinned(self.gen_dir(state.generation))

    # --- apply -------------------------------------------------------------------------------

    def apply(self, ruleset: Ruleset, interfaces: list[str], mode: str = "native",
              compiled: Compiled | None = None) -> ApplyReport:
        """Puts ruleset in force on interfaces (and on every interface already attached)."""
        require_root()
        ensure_bpffs()
        compiled = compiled or compile_ruleset(ruleset)
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
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.link_pin(name))
            rule_ifaces = {n for r in compiled.rules for n in (r.interfaces or ())}
            known = {}
            for name in sorted(rule_ifaces):
                try:
                    known[name] = netns.ifindex(name, self.ns)
                except RuntimeFailure:
                    report.notes.append(f"rules name interface '{name}', which does not exist here")

            t0 = time.monotonic()
            gen = Generation.load(compiled, known)
            report.load_seconds = time.monotonic() - t0
            new_n = old.generation + 1
            new_dir = self.gen_dir(new_n)
            swapped: list[tuple[int, str]] = []  # (link fd, ifname) already on the new generation
            try:
                shutil.rmtree(new_dir, ignore_errors=True)  # a leftover of an interrupted apply
                gen.pin(new_dir)
                state = State(netns=self.ns, generation=new_n, ruleset=ruleset.to_json(),
                              applied_at=time.time())
                for name, ifindex in targets.items():
                    state.interfaces[name] = self._attach(
                        gen, name, ifindex, old.interfaces.get(name), mode, swapped, report)
                self._write_state(state)
            except BaseException:
                self._roll_back(old, swapped)
                shutil.rmtree(new_dir, ignore_errors=True)
                raise
            finally:
                for fd, _ in swapped:
                    os.close(fd)
                gen.close()
            for entry in os.listdir(self.pin_dir):
                if entry.startswith("gen-") and entry != f"gen-{new_n}":
                    shutil.rmtree(os.path.join(self.pin_dir, entry), ignore_errors=True)
        report.generation = new_n
        report.interfaces = state.interfaces
        return report

    def _attach(self, gen: Generation, name: str, ifindex: int, old: dict[str, Any] | None,
                mode: str, swapped: list[tuple[int, str]], report: ApplyReport) -> dict[str, Any]:
        pin = self.link_pin(name)
        if os.path.exists(pin):
            fd = libbpf.obj_get(pin)
            info = libbpf.link_info(fd)
            if info.ifindex == ifindex:
                have = (old or {}).get("mode", "native")
                if mode not in ("auto", have):
                    os.close(fd)
                    raise RuntimeFailure(
                        f"{name} is attached in {have} mode; run 'bpfwall down -i {name}' first "
                        f"to change to {mode} (it leaves the interface open meanwhile)")
                libbpf.link_update(fd, gen.prog_fd)
                swapped.append((fd, name))
                report.swapped.append(name)
                return {"ifindex": ifindex, "mode": have}
            # The interface was deleted or recreated: the link is dead.
            os.close(fd)
            os.unlink(pin)
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
        return {"ifindex": ifindex, "mode": m}

    def _roll_back(self, old: State, swapped: list[tuple[int, str]]) -> None:
        """Points links that already took the new generation back at the old one."""
        if not swapped or not old.interfaces:
            return
        try:
            prev = Generation.open_pinned(self.gen_dir(old.generation))
        except RuntimeFailure:
            return
        with prev:
            for fd, _ in swapped:
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
                names += [e[5:] for e in os.listdir(self.pin_dir)
                          if e.startswith("link-") and e[5:] not in names]
            for name in names:
                pin = self.link_pin(name)
                if os.path.exists(pin):
                    fd = libbpf.obj_get(pin)
                    try:
                        with contextlib.suppress(libbpf.BpfError):
                            libbpf.link_detach(fd)
                    finally:
                        os.close(fd)
                    os.unlink(pin)
                    removed.append(name)
                state.interfaces.pop(name, None)
            if state.interfaces:
                self._write_state(state)
            else:
                shutil.rmtree(self.pin_dir, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.state_path)
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
            interfaces=[],
        )
        for name, info in state.interfaces.items():
            entry = {"name": name, "ifindex": info["ifindex"], "mode": info["mode"]}
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


@dataclass
class ApplyReport:
    generation: int = 0
    attached: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_seconds: float = 0.0
