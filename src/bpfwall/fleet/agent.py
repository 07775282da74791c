"""`bpfwall agent`: keeps one host's firewall equal to its effective policy in etcd.

The agent reads every key under the prefix once, puts the merged policy in force through
the same transaction as `apply` (journal, lock, crash safety), then follows a watch from the
next revision. A change of a policy re-merges and applies; an element put or deleted under
sets/ changes a fleet set in force directly, as `bpfwall set` does. A policy that does not
parse, clashes or would cut an SSH session of the host is never applied: the rules in force
stay and the host's status says why. The status key lives under a lease the agent keeps
alive, so a dead agent's status lapses while its firewall stays (pinned in the kernel).

etcd going away changes nothing in force. The last policy applied is kept in the state
directory, and an agent that starts while etcd is unreachable applies it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import config, transaction
from ..cidrset import Element
from ..errors import BpfwallError, InputError, RuntimeFailure
from ..scope import Scope
from . import policy
from .store import Compacted, Event, Store, Unavailable

LEASE_TTL = 10  # seconds a status outlives its agent
REFRESH = 3.0  # seconds between lease refreshes (a third of the TTL)
CACHE_FILE = "effective.json"
DEFAULT_STATE_DIR = "/var/lib/bpfwall/agent"
# An agent has no --force: a policy that would cut a session is fixed in the store, or the
# session ended, and the next change (or a restart of the agent) tries again.
AGENT_ADVICE = "end that session: the agent tries again at the next policy change, or when it restarts"


@dataclass
class AgentConfig:
    host: str
    labels: dict[str, str] = field(default_factory=dict)
    interfaces: list[str] = field(default_factory=list)
    ns: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    mode: str = "native"
    files_dir: str | None = None  # the only place policies' set files may be read from (None: none)


def parse_labels(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """KEY=VALUE pairs (--label, --canary) as a mapping."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise InputError(f"'{value}' is not a label: give KEY=VALUE, such as role=web")
        out[key.strip()] = val.strip()
    return out


class Agent:
    def __init__(self, store: Store, cfg: AgentConfig, say: Callable[[str], None] = print) -> None:
        self.store = store
        self.cfg = cfg
        self.say = say
        self.scope = Scope(cfg.ns)
        self.texts: dict[str, str] = {}  # policy name -> text, as the store holds them
        self.canaries: dict[str, bytes] = {}  # policy name -> canary/NAME's value (a push under way)
        self.sets: dict[str, set[str]] = {}  # fleet set name -> elements
        self._parsed: dict[tuple[str, str], policy.Policy | InputError] = {}  # (name, text) -> parsed
        self.revision = 0  # the store revision the firewall is equal to
        self.applied: dict[str, Any] = {}  # digest, policies, generation, rules, applied_at
        self.fleet_static: dict[str, set[Element]] = {}  # fleet sets in force -> the policies' own elements
        self.error: str | None = None
        self.warnings: list[str] = []
        # Store elements the lockout guard kept out of a fleet set: the host reports an error
        # while any is still in the store.
        self.refused: dict[str, set[Element]] = {}
        self.lease = 0
        self._kept_alive = 0.0
        self._last_status = ""

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until stop: read everything once, then follow the watch. A broken watch resumes from
        the revision in force (etcd keeps the history until it compacts it); a compacted one,
        or a start, reads everything again."""
        backoff, need_read, started, since = 0.5, True, False, time.monotonic()
        while not stop.is_set():
            try:
                if need_read:
                    self.sync()
                    need_read, started = False, True
                since = time.monotonic()
                self.follow(stop)
            except Compacted as exc:
                self.say(f"the watch's revision was compacted ({exc}); reading everything again")
                need_read = True
            except Unavailable as exc:
                if not started:
                    started = True
                    self.apply_cached()
                if started and time.monotonic() - since > 10 * backoff:
                    backoff = 0.5  # it had been up a while: this is a new outage
                self.say(f"{exc}; the rules in force stay, retrying in {backoff:.1f} s")
                self.lease = 0
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def sync(self) -> None:
        """Everything under the prefix, read at one revision, and the firewall made equal to it."""
        revision, kvs = self.store.read()
        self.texts, self.sets, self.canaries = {}, {}, {}
        for key, value in kvs.items():
            kind, _, rest = key.partition("/")
            if kind == "policies" and rest:
                self.texts[rest] = value.decode("utf-8", errors="replace")
            elif kind == "canary" and rest:
                self.canaries[rest] = value
            elif kind == "sets" and "/" in rest:
                name, _, element = rest.partition("/")
                self.sets.setdefault(name, set()).add(element)
        self.converge(revision, resync_sets=True)

    def follow(self, stop: threading.Event) -> None:
        """Applies the watch's events until stop is set; raises when the watch breaks."""
        batches: queue.Queue[list[Event] | BaseException | None] = queue.Queue()
        watch_stop = threading.Event()

        def watch() -> None:
            try:
                for batch in self.store.watch(self.revision + 1, watch_stop):
                    batches.put(batch)
                batches.put(None)
            except BaseException as exc:  # handed to the loop, which decides
                batches.put(exc)

        watcher = threading.Thread(target=watch, name="etcd-watch", daemon=True)
        watcher.start()
        try:
            while not stop.is_set():
                try:
                    item = batches.get(timeout=REFRESH)
                except queue.Empty:
                    self.report()  # keeps the lease alive
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.on_events(item)
        finally:
            watch_stop.set()

    def on_events(self, events: list[Event]) -> None:
        policies_changed = False
        added: dict[str, set[str]] = {}
        removed: dict[str, set[str]] = {}
        revision = self.revision
        for e in events:
            revision = max(revision, e.revision)
            kind, _, rest = e.key.partition("/")
            if kind == "policies" and rest:
                policies_changed = True
                if e.value is None:
                    self.texts.pop(rest, None)
                else:
                    self.texts[rest] = e.value.decode("utf-8", errors="replace")
            elif kind == "canary" and rest:
                policies_changed = True
                if e.value is None:
                    self.canaries.pop(rest, None)
                else:
                    self.canaries[rest] = e.value
            elif kind == "sets" and "/" in rest:
                name, _, element = rest.partition("/")
                if e.value is None:
                    self.sets.get(name, set()).discard(element)
                    removed.setdefault(name, set()).add(element)
                    added.get(name, set()).discard(element)
                else:
                    self.sets.setdefault(name, set()).add(element)
                    added.setdefault(name, set()).add(element)
                    removed.get(name, set()).discard(element)
        if policies_changed:
            # An apply takes the sets as they are now; when the policy in force stays (the change
            # was for other hosts), the set changes of this batch still have to be made.
            self.converge(revision, added=added, removed=removed)
            return
        if added or removed:
            self.change_sets(added, removed)
            if self.error and self.error.startswith("sets/") and not any(self.refused.values()):
                self.error = None  # every refused element has left the store
        if revision != self.revision and not (added or removed):
            return  # only other hosts' status changed: nothing of ours to report
        self.revision = revision
        self.report()

    # --- applying --------------------------------------------------------------------------

    def parsed(self) -> tuple[list[policy.Policy], list[str]]:
        """The store's policies parsed (each text once), and the problems of those that fail."""
        good, problems = [], []
        seen = {}
        texts = dict(self.texts)
        for name, value in self.canaries.items():  # this host is a canary of a push under way
            canary = policy.parse_canary(name, value)
            if canary is not None and all(self.cfg.labels.get(k) == v for k, v in canary["select"].items()):
                texts[name] = canary["text"]
        for name, text in sorted(texts.items()):
            key = (name, text)
            result = self._parsed.get(key)
            if result is None:
                try:
                    result = policy.parse(name, text)
                except InputError as exc:
                    result = exc
            seen[key] = result
            if isinstance(result, InputError):
                problems += result.problems
            else:
                good.append(result)
        self._parsed = seen
        return good, problems

    def converge(self, revision: int, resync_sets: bool = False, added: dict[str, set[str]] | None = None,
                 removed: dict[str, set[str]] | None = None) -> None:
        """Puts the effective policy at revision in force unless it is in force already. When
        it is, the fleet sets in force are brought to the store's elements: by walking them
        after a fresh read (resync_sets), else by the element changes the watch brought."""
        policies, problems = self.parsed()
        self.warnings = []
        if problems:
            # A policy that does not parse may be meant for this host: nothing is applied
            # until it is fixed, whatever else changed.
            self.fail(revision, problems)
            return
        digest = policy.digest(policies, self.cfg.labels)
        if digest == self.applied.get("digest"):  # in force already (a failure since changed nothing)
            self.error = None
            if resync_sets:
                self.resync_sets()
            elif added or removed:
                self.change_sets(added or {}, removed or {})
            self.revision = revision
            self.report()
            return
        try:
            result = policy.effective(policies, self.cfg.labels, self.sets, config.FileFence(self.cfg.files_dir))
            self.warnings = result.warnings
            ruleset = result.ruleset
            report, tables = self.apply(ruleset)
        except BpfwallError as exc:
            self.fail(revision, exc.problems if isinstance(exc, InputError) else [str(exc)])
            return
        names = sorted(p.name for p in policies if p.selects(self.cfg.labels))
        self.applied = {"digest": digest, "policies": names, "generation": report.generation,
                        "rules": len([r for r in ruleset.rules if not r.implicit]), "applied_at": time.time()}
        self.fleet_static = result.fleet_static
        self.refused = {}  # the apply took every store element, past apply's own guard
        self.error = None
        self.revision = revision
        self.save_cache(policies, names)
        self.say(f"revision {revision}: generation {report.generation} in force "
                 f"({self.applied['rules']} rules from {', '.join(names)})")
        self.report()
        if not report.reused:
            self.preload_idle(ruleset, tables, report.generation)

    def apply(self, ruleset) -> tuple[transaction.ApplyReport, dict[str, Any]]:
        from .. import lockout

        targets = transaction.target_interfaces(self.scope, ruleset, self.cfg.interfaces,
                                                "the agent -i IFACE or list 'interfaces:' in a policy")
        lockout.guard_scope(self.scope, ruleset, targets, AGENT_ADVICE)
        tables = transaction.compile_all(ruleset)
        return transaction.apply(self.scope, ruleset, targets, self.cfg.mode, tables), tables

    def preload_idle(self, ruleset, tables: dict[str, Any], generation: int) -> None:
        """After an apply that loaded new programs: a second copy loaded now, while nothing
        waits, so that the next policy change refills it in milliseconds instead of waiting
        for the verifier. A failure here costs only that speed."""
        try:
            transaction.preload_idle(self.scope, ruleset, tables, generation)
        except BpfwallError as exc:
            self.say(f"could not load a spare copy of generation {generation} (the next change "
                     f"loads anew): {exc}")

    def fail(self, revision: int, problems: list[str]) -> None:
        message = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        if message != self.error:
            self.say(f"revision {revision}: not applied, the rules in force stay: {message}")
        self.error = message
        self.revision = revision
        self.report()

    def change_sets(self, added: dict[str, set[str]], removed: dict[str, set[str]]) -> None:
        """Element changes of fleet sets in force, each set's at once, as `bpfwall set` makes
        them. An element a policy itself lists stays when the store's key for it goes."""
        for name in sorted(set(added) | set(removed)):
            static = self.fleet_static.get(name)
            if static is None:
                continue  # not a fleet set of the rule set in force
            for texts, add in ((added.get(name, set()), True), (removed.get(name, set()), False)):
                elements, bad = policy.store_elements(sorted(texts))
                self.warnings += [f"sets/{name}/{text}: {err}" for text, err in bad]
                if not add:
                    self.refused.get(name, set()).difference_update(elements)
                    elements = [e for e in elements if e not in static]
                if elements:
                    self._set_change(name, elements, add)

    def _set_change(self, name: str, elements: list[Element], add: bool) -> None:
        try:
            transaction.set_change(self.scope, name, elements, add)
        except InputError as exc:
            if add:
                self.warnings += exc.problems
            # a removal of what is not there: the set is as the store says already
        except RuntimeFailure as exc:  # the lockout guard, say: reported as a failed policy is
            if add:
                self.refused.setdefault(name, set()).update(elements)
            self.error = f"sets/{name}: {exc}"
            self.say(self.error)

    def resync_sets(self) -> None:
        """After a fresh read, the fleet sets in force made equal to the store's elements
        (deltas missed while the watch was down)."""
        for name, static in sorted(self.fleet_static.items()):
            try:
                live = set(self.scope.set_elements(name))
            except BpfwallError:
                continue
            stored, _ = policy.store_elements(sorted(self.sets.get(name, set())))
            want = set(stored) | static
            for elements, add in ((want - live, True), (live - want, False)):
                if elements:
                    self._set_change(name, sorted(elements), add)

    # --- the cache, for a start without etcd ----------------------------------------------

    def cache_path(self) -> str:
        scope = f"netns-{self.cfg.ns}" if self.cfg.ns else "host"
        return os.path.join(self.cfg.state_dir, scope, CACHE_FILE)

    def save_cache(self, policies: list[policy.Policy], names: list[str]) -> None:
        data = {"revision": self.revision, "labels": self.cfg.labels,
                "policies": {p.name: p.text for p in policies if p.name in names},
                "sets": {name: sorted(self.sets.get(name, set())) for name in self.fleet_static}}
        path = self.cache_path()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(json.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def apply_cached(self) -> None:
        """The last policy this host applied, when etcd cannot be reached at start."""
        try:
            with open(self.cache_path()) as f:
                data = json.load(f)
        except FileNotFoundError:
            self.say("etcd is unreachable and no policy was cached here: the rules in force stay")
            return
        except (OSError, ValueError) as exc:
            self.say(f"cannot read the cached policy {self.cache_path()}: {exc}")
            return
        self.texts = dict(data.get("policies", {}))
        self.sets = {name: set(elements) for name, elements in data.get("sets", {}).items()}
        self.say(f"etcd is unreachable: applying the policy cached at revision {data.get('revision')}")
        with contextlib.suppress(Unavailable):  # its status waits for etcd
            self.converge(int(data.get("revision", 0)))

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"host": self.cfg.host, "labels": self.cfg.labels, "policies": self.applied.get("policies", []),
                "revision": self.revision, "ok": self.error is None, "error": self.error,
                "generation": self.applied.get("generation"), "rules": self.applied.get("rules"),
                "applied_at": self.applied.get("applied_at"), "warnings": self.warnings[:20]}

    def report(self) -> None:
        """Writes the status when it changed, and keeps its lease alive; a lease that lapsed
        (etcd was away longer than its TTL) is replaced and the status written again."""
        now = time.monotonic()
        if self.lease and now - self._kept_alive >= REFRESH:
            if not self.store.keep_alive(self.lease):
                self.lease = 0
            self._kept_alive = now
        if not self.lease:
            self.lease = self.store.grant(LEASE_TTL)
            self._kept_alive = now
            self._last_status = ""
        text = json.dumps(self.status(), sort_keys=True)
        if text != self._last_status:
            self.store.put(f"status/{self.cfg.host}", text, lease=self.lease)
            self._last_status = text
