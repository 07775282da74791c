"""The firewall of one network namespace as it stands: its state files, lock and pins.

Everything bpfwall leaves on a host lives in one scope per network namespace:

    /sys/fs/bpf/bpfwall/<scope>/gen-<N>/{ingress,egress}/{prog,counters}   the running generation
    /sys/fs/bpf/bpfwall/<scope>/gen-<N>/{host4,host6,set4,set6,set_version}   its CIDR sets (`bpfwall set`)
    /sys/fs/bpf/bpfwall/<scope>/link-<ifname>                    one XDP link per interface
    /run/bpfwall/<scope>.json                                     what was applied (rules, interfaces)

where <scope> is "host" or "netns-<name>". This module is the read side: the readers
(stats, bans, logs, conntrack, top, the exporter) need nothing else. Changing a scope
is transaction.py's; attaching to interfaces is links.py's.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import access, counters, ifinfo, libbpf, netns, shared
from .cidrset import Element
from .dispatcher import Dispatcher
from .errors import InputError, RuntimeFailure
from .generation import Generation
from .maps import CT_MAPS
from .ruleset import Ruleset
from .setmaps import SetTables

PIN_ROOT = "/sys/fs/bpf/bpfwall"
LOCK_WAIT = 120.0  # seconds a run waits for another to finish
STATE_ROOT = "/run/bpfwall"


# How the scope's link pins are named: an interface's XDP and tcx links, the cgroup hooks'.
IFACE_PINS = ("link-", "tcx-")
HOOK_PIN = "cgroup-"
LINK_PINS = (*IFACE_PINS, HOOK_PIN)

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
    shapes: dict[str, Any] = field(default_factory=dict)  # per direction: what its load fixed (generation.layout)
    # The previous generation, kept loaded in the dispatcher's idle slot so that the next
    # apply of a fitting rule set refills its tables instead of loading: its number and shapes.
    idle: dict[str, Any] = field(default_factory=dict)
    # Egress rules with owners: "yes" when connect() and sendmsg() are judged too, else why
    # not (atconnect); "" for a rule set without owners.
    at_connect: str = ""

    def rules(self) -> Ruleset:
        if self.ruleset is None:
            raise RuntimeFailure("no rule set is applied here")
        return Ruleset.from_json(self.ruleset)


def _rules_in(state: State, direction: str) -> int:
    """How many counter slots of rules the generation in force uses in direction."""
    if state.ruleset is None:
        return shared.MAX_RULES
    return sum(1 for r in state.ruleset.get("rules", ()) if r["direction"] == direction)


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
        # What an unchanged apply checks, for the state version it names: a few hundred bytes
        # beside the state's megabytes, so that re-applying the same file reads no rule set.
        self.summary_path = os.path.join(STATE_ROOT, f"{self.name}.summary.json")
        self.dispatch_dir = os.path.join(self.pin_dir, "dispatch")
        self.on_wait: Callable[[str], None] | None = None  # told when another run holds the lock
        self._state_cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def read_state(self) -> State | None:
        """The state file, parsed once per version of it: an apply reads it several times,
        and at 10,000 rules each parse costs a tenth of a second. The file is only ever
        replaced (a new inode), never written in place, so (inode, size, mtime) names a
        version. The rule set is shared between the States returned (it is only read);
        the rest is copied, as callers change it."""
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise access.denied_file(self.state_path) from None
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._state_cache is None or self._state_cache[0] != version:
            data = read_json(self.state_path)
            if data is None:
                return None
            self._state_cache = (version, data)
        data = self._state_cache[1]
        return State(**{k: (v if k == "ruleset" else copy.deepcopy(v)) for k, v in data.items()})

    def require_state(self) -> State:
        state = self.read_state()
        if state is None or not state.interfaces:
            where = f" in network namespace '{self.ns}'" if self.ns else ""
            raise RuntimeFailure(f"bpfwall is not running{where}: nothing applied "
                                 f"(see 'bpfwall apply{self.ns_arg()}')")
        return state

    def write_state(self, state: State, ruleset_text: str | None = None) -> None:
        """ruleset_text: state.ruleset already encoded (see encode_json)."""
        write_json(self.state_path, state.__dict__, access.group_id(state.group),
                   encoded={"ruleset": ruleset_text} if ruleset_text is not None else None)
        st = os.stat(self.state_path)
        write_json(self.summary_path, {
            "state": [st.st_ino, st.st_size, st.st_mtime_ns], "generation": state.generation,
            "interfaces": state.interfaces, "dispatcher": state.dispatcher,
            "inputs": (state.ruleset or {}).get("inputs") or {}, "at_connect": state.at_connect}, sync=False)

    def _summary(self) -> State | None:
        """The state in force as far as unchanged() looks, from the summary when it names the
        state file as it is now (inode, size, mtime); None when it does not or is unreadable,
        as after a crash between the two writes: then the state itself is read."""
        try:
            data = read_json(self.summary_path)
            st = os.stat(self.state_path)
        except (RuntimeFailure, OSError):
            return None
        if not isinstance(data, dict) or data.get("state") != [st.st_ino, st.st_size, st.st_mtime_ns]:
            return None
        return State(netns=self.ns, generation=data["generation"], interfaces=data["interfaces"],
                     dispatcher=data["dispatcher"], ruleset={"inputs": data["inputs"]},
                     at_connect=data.get("at_connect", ""))

    def share(self, state: State) -> list[str]:
        """Owners and modes of the generation in force, for the rule file's group."""
        return access.share(PIN_ROOT, self.pin_dir, self.gen_dir(state.generation), STATE_ROOT,
                            [self.state_path, self.sets_path], access.group_id(state.group))

    def unchanged(self, path: str, interfaces: list[str], mode: str) -> int | None:
        """The generation in force, when applying the rule file at path to interfaces would
        change nothing: its rule set was read from these very files, byte for byte, no set
        has changed since by `set`, every interface is protected already in that mode with
        its link alive, and no apply is unfinished or awaiting confirmation. None: apply."""
        from .inputs import inputs_unchanged

        if os.geteuid() != 0:
            return None
        state = self._summary() or self.read_state()
        if state is None or not state.interfaces or not state.ruleset:
            return None
        if os.path.exists(self.journal_path) or os.path.exists(self.confirm_path):
            return None
        if state.at_connect:
            return None  # where connections are judged follows the namespace's interfaces and addresses
        inputs = state.ruleset.get("inputs") or {}
        if os.path.abspath(path) not in inputs or not inputs_unchanged(inputs):
            return None
        live = read_json(self.sets_path) or {}
        if live.get("generation") == state.generation and live.get("sets"):
            return None  # a set changed since: the apply puts the file's elements back
        if any(n not in state.interfaces or mode not in ("auto", state.interfaces[n].get("mode"))
               for n in interfaces):
            return None
        if not all(self.link_health(n, i, state).get("attached") for n, i in state.interfaces.items()):
            return None
        return state.generation

    def set_changes(self, state: State) -> dict[str, dict[str, Any]]:
        """Per CIDR set of the generation in force: its size and the Fix of its last change."""
        sets = {name: {"size": meta["size"]} for name, meta in (state.ruleset or {}).get("sets", {}).items()}
        data = read_json(self.sets_path) or {}
        if data.get("generation") == state.generation:  # else left by an older generation
            for name, entry in data.get("sets", {}).items():
                if name in sets:
                    sets[name] = entry
        return sets

    @property
    def lock_path(self) -> str:
        """This scope's lock: the host's is STATE_ROOT/lock, a namespace's NAME.lock beside
        its state (removed with it), so that namespaces change their firewalls in parallel."""
        return os.path.join(STATE_ROOT, "lock" if self.ns is None else f"{self.name}.lock")

    @contextlib.contextmanager
    def lock(self, wait: float = LOCK_WAIT) -> Iterator[None]:
        """Serialises the runs that change this scope's firewall. A run that finds it taken
        says by whom, waits up to `wait` seconds, then fails."""
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        path = self.lock_path
        deadline = time.monotonic() + wait
        told = False
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise RuntimeFailure(f"another bpfwall run (pid {holder}) still holds "
                                         f"{path} after {wait:g} s: try again later") from None
                if not told and self.on_wait is not None:
                    self.on_wait(f"waiting for another bpfwall run (pid {holder}) to finish")
                    told = True
                time.sleep(0.02)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # `down` removed the file while we waited on it: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def gen_dir(self, n: int) -> str:
        return os.path.join(self.pin_dir, f"gen-{n}")

    def link_pin(self, ifname: str, direction: str = "ingress") -> str:
        return os.path.join(self.pin_dir, f"{IFACE_PINS[direction != 'ingress']}{ifname}")

    def hook_pin(self, hook: str) -> str:
        """The pin of the link of a cgroup hook (dispatcher.HOOKS) at the cgroup2 root."""
        return os.path.join(self.pin_dir, f"{HOOK_PIN}{hook}")

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
                rules = _rules_in(state, direction)
                with self.open_generation(state, direction) as gen:
                    for b, counts in enumerate(gen.counter_blocks(n_blocks, rules)):
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

    def open_ct_maps(self) -> dict[str, int] | None:
        """fds of the pinned connection table, or None when there is none."""
        return self.open_pinned(CT_MAPS)

    def ns_arg(self) -> str:
        return f" --netns {self.ns}" if self.ns else ""

    def has_link(self, name: str, direction: str) -> bool:
        return os.path.exists(self.link_pin(name, direction))

    def pending_confirm(self) -> dict[str, Any] | None:
        """The apply that awaits confirmation: generation, deadline, token; or None
        (also for a reader who may not see it: the file is root's)."""
        if os.geteuid() != 0 and not os.access(self.confirm_path, os.R_OK):
            return None
        return read_json(self.confirm_path)

    def describe(self, repairs: list[str]) -> dict[str, Any]:
        """What is in force and whether each link is alive (status, after a root run's
        repairs); a reader without root gets what the state file and netlink tell."""
        root = os.geteuid() == 0
        state = self.read_state()
        out: dict[str, Any] = {"netns": self.ns, "running": bool(state and state.interfaces),
                               "repairs": repairs}
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
        if state.at_connect:
            out["at_connect"] = state.at_connect == "yes"
            if state.at_connect != "yes":
                out["at_connect_why_not"] = state.at_connect
        pending = self.pending_confirm()
        if pending is not None:
            out["awaiting_confirm"] = {"generation": pending["generation"],
                                       "seconds_left": max(0, round(pending["deadline"] - time.time())),
                                       "rollback_to": pending["previous"]["generation"]}
        for name, info in state.interfaces.items():
            entry = {"name": name, "ifindex": info["ifindex"], "mode": info["mode"],
                     **({"generic_why": info["generic_why"]} if info.get("generic_why") else {}),
                     "egress": info.get("egress", False),
                     "program_id": state.programs.get("ingress", 0)}
            if root:
                entry.update(self.link_health(name, info, state))
                problem = self.answer_problem(rules, name, info)
                if problem:
                    entry["answers"] = problem
            elif self.ns:  # netlink answers for the namespace one is in, and entering takes root
                entry.update(attached=None, problem="not checked: a network namespace's links need root")
            else:
                entry.update(self.xdp_health(info, state))
            out["interfaces"].append(entry)
        return out

    def answer_problem(self, ruleset: Ruleset, name: str, info: dict[str, Any]) -> str | None:
        """Why the answers this rule set sends from XDP cannot leave the interface, if so."""
        answers = "syn_cookies" in ruleset.conntrack or any(
            r.action == "reject" and r.direction == "ingress" for r in ruleset.rules)
        if not answers:
            return None
        return ifinfo.answers_blocked(info.get("kind", ""), info.get("mode", ""), info["ifindex"], self.ns)

    def link_health(self, name: str, info: dict[str, Any], state: State) -> dict[str, Any]:
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
    def xdp_health(info: dict[str, Any], state: State) -> dict[str, Any]:
        try:
            prog_id = libbpf.xdp_prog_id(info["ifindex"])
        except libbpf.BpfError as exc:
            return {"attached": False, "problem": f"cannot query XDP: {exc}"}
        if prog_id == 0:
            return {"attached": False, "problem": "no XDP program on the interface"}
        if state.dispatcher and prog_id != state.dispatcher.get("ingress"):
            return {"attached": False, "problem": f"XDP program {prog_id} is not bpfwall's dispatcher"}
        return {"attached": True}


def read_json(path: str) -> Any:
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


def encode_json(data: dict[str, Any], encoded: dict[str, str] | None = None) -> str:
    """data as compact JSON. encoded: members given as JSON text already, which go in as
    they are (after the others): an apply writes the rule set, megabytes at 10,000 rules,
    into the journal and then into the state, and encodes it once."""
    # dumps, not dump: only dumps takes the C encoder (json.dump writes through the
    # pure-Python one, seconds for the state of 10,000 rules).
    if not encoded:
        return json.dumps(data, separators=(",", ":"))
    rest = json.dumps({k: v for k, v in data.items() if k not in encoded}, separators=(",", ":"))
    members = "".join(f",{json.dumps(k)}:{text}" for k, text in encoded.items())
    return "{" + members[1:] + "}" if rest == "{}" else rest[:-1] + members + "}"


def write_json(path: str, data: Any, gid: int | None = None, sync: bool = True,
               encoded: dict[str, str] | None = None) -> None:
    """Replaces path atomically: a reader sees the old file or the new one, and a crash
    leaves one of them whole (written and synced before the rename; sync=False for a file
    whose loss costs nothing). Root's alone (0600), or readable by group gid (0640).
    encoded: as for encode_json."""
    os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        if gid is not None:
            os.fchown(f.fileno(), 0, gid)
            os.fchmod(f.fileno(), 0o640)
        f.write(encode_json(data, encoded) if isinstance(data, dict) else json.dumps(data))
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def missing_dispatcher(directory: str) -> Dispatcher:
    raise RuntimeFailure(f"the dispatcher pinned in {directory} is gone: run 'bpfwall apply' again")
