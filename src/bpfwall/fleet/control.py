"""`bpfwall fleet`: what an operator does to the fleet's store, and what it reads back."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..cidrset import format_element, parse_element
from ..errors import InputError, RuntimeFailure
from . import policy
from .store import Store

TXN_OPS = 128  # etcd's default --max-txn-ops


def check_policy(store: Store, name: str, text: str) -> policy.Policy:
    """The policy parsed and merged, before it is written: with the fleet-wide policies
    (those that select every host), which may declare the sets it uses, as the hosts it
    selects see it. InputError names FILE-in-the-store:LINE."""
    new = policy.parse(name, text)
    _, kvs = store.read("policies/")
    others = []
    for key, value in kvs.items():
        other = key.partition("/")[2]
        if other == name:
            continue
        try:
            parsed = policy.parse(other, value.decode("utf-8", errors="replace"))
        except InputError:
            continue  # its own problem, which the hosts report
        if not parsed.select:
            others.append(parsed)
    # The set files are the hosts' (each agent's --files-dir): here only their names are checked.
    policy.effective([new, *others], dict(new.select), {}, config.FileFence(None, read=False))
    return new


def push(store: Store, name: str, text: str) -> int:
    """Checks and writes policies/NAME; the revision of the write."""
    if not name or "/" in name:
        raise InputError(f"--name: '{name}' is not a policy name (no '/')")
    check_policy(store, name, text)
    return store.put(f"policies/{name}", text)


CANARY_APPLY_SECONDS = 60.0  # how long the canaries have to put the policy in force
POLL = 0.2


def push_canary(store: Store, name: str, text: str, canary: dict[str, str], wait: float,
                say: Callable[[str], None]) -> int:
    """Tries the policy on the hosts with the canary labels first, under canary/NAME (a key
    the agents read as an override of policies/NAME, kept under a lease this command holds:
    if the command dies, it lapses and the canaries go back). When every canary has applied
    it and still reports ok after `wait` seconds, policies/NAME is written and canary/NAME
    removed in one transaction: the revision. If any canary fails or stops reporting, the
    canary key is removed (the canaries go back) and RuntimeFailure names the hosts."""
    if not name or "/" in name:
        raise InputError(f"--name: '{name}' is not a policy name (no '/')")
    check_policy(store, name, text)
    label = ", ".join(f"{k}={v}" for k, v in sorted(canary.items()))
    hosts = sorted(h["host"] for h in status(store)["hosts"]
                   if all((h.get("labels") or {}).get(k) == v for k, v in canary.items()))
    if not hosts:
        raise RuntimeFailure(f"no host reports the label {label}: no canary to try the policy on")
    lease = store.grant(int(wait + CANARY_APPLY_SECONDS) + 30)
    revision = store.put(f"canary/{name}", json.dumps({"select": canary, "text": text}), lease=lease)
    say(f"trying policy {name} on {', '.join(hosts)} ({label}) at revision {revision}")
    started = time.monotonic()
    held_since: float | None = None
    kept = started
    while True:
        now = time.monotonic()
        if now - kept >= 3.0:
            store.keep_alive(lease)
            kept = now
        _, kvs = store.read("status/")
        seen = {}
        for key, value in kvs.items():
            with contextlib.suppress(ValueError):
                seen[key.partition("/")[2]] = json.loads(value)
        gone = [h for h in hosts if h not in seen]
        failed = [f"{h}: {seen[h].get('error')}" for h in hosts
                  if h in seen and int(seen[h].get("revision") or 0) >= revision and not seen[h].get("ok")]
        applied = all(h in seen and int(seen[h].get("revision") or 0) >= revision and seen[h].get("ok")
                      for h in hosts)
        problem = None
        if failed:
            problem = "failed on " + "; ".join(failed)
        elif gone:
            problem = f"stopped reporting: {', '.join(gone)}"
        elif not applied and now - started > max(wait, CANARY_APPLY_SECONDS):
            late = [h for h in hosts if int(seen[h].get("revision") or 0) < revision]
            problem = f"did not apply it within {max(wait, CANARY_APPLY_SECONDS):.0f} s: {', '.join(late)}"
        if problem:
            _take_back(store, name, lease, hosts, say)
            raise RuntimeFailure(f"canary of policy {name} {problem}; taken back on the canaries")
        if applied and held_since is None:
            held_since = now
            say(f"every canary applied it; holding {wait:.0f} s")
        if held_since is not None and now - held_since >= wait:
            break
        time.sleep(POLL)
    revision = store.put_many({f"policies/{name}": text}, [f"canary/{name}"])
    with contextlib.suppress(RuntimeFailure):
        store.revoke(lease)
    return revision


def _take_back(store: Store, name: str, lease: int, hosts: list[str], say: Callable[[str], None]) -> None:
    """canary/NAME removed; waits (a while) for the canaries to report the policy they had."""
    _, revision = store.delete(f"canary/{name}")
    with contextlib.suppress(RuntimeFailure):
        store.revoke(lease)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, kvs = store.read("status/")
        back = [h for h in hosts if f"status/{h}" in kvs
                and int(json.loads(kvs[f"status/{h}"]).get("revision") or 0) >= revision]
        if len(back) == len([h for h in hosts if f"status/{h}" in kvs]):
            say(f"taken back on {', '.join(hosts)} (revision {revision})")
            return
        time.sleep(POLL)
    say(f"taken back at revision {revision}; not every canary has reported it yet")


def remove(store: Store, name: str) -> int:
    deleted, revision = store.delete(f"policies/{name}")
    if not deleted:
        raise RuntimeFailure(f"no policy '{name}' under {store.prefix}policies/")
    return revision


def set_change(store: Store, name: str, texts: list[str], add: bool) -> tuple[int, int]:
    """Puts (or deletes) the elements of fleet set NAME, in transactions of TXN_OPS: (count,
    the last revision).
    Elements are written in their canonical form (192.0.2.1 as 192.0.2.1/32), so that a
    delete finds what an add wrote however either was spelled."""
    if not name or "/" in name:
        raise InputError(f"'{name}' is not a set name")
    problems, keys = [], []
    for text in texts:
        element, err = parse_element(text)
        if err:
            problems.append(f"{text}: {err}")
        else:
            keys.append(f"sets/{name}/{format_element(element)}")
    if problems:
        raise InputError(problems)
    if not keys:
        raise InputError("no elements given (pass them as arguments, or '-' to read stdin)")
    keys = list(dict.fromkeys(keys))
    revision = 0
    for i in range(0, len(keys), TXN_OPS):  # etcd refuses larger transactions (--max-txn-ops)
        chunk = keys[i : i + TXN_OPS]
        revision = store.put_many({k: b"" for k in chunk}) if add else store.put_many({}, chunk)
    return len(keys), revision


def status(store: Store) -> dict[str, Any]:
    """Every host that reports, with how far it is behind the newest change of a policy or set."""
    revision, kvs = store.read("status/")
    newest = max(store.newest_change("policies/"), store.newest_change("sets/"))
    hosts = []
    for key, value in sorted(kvs.items()):
        try:
            entry = json.loads(value)
        except ValueError:
            entry = {"host": key.partition("/")[2], "ok": False, "error": "status is not JSON"}
        entry["behind"] = max(0, newest - int(entry.get("revision") or 0))
        hosts.append(entry)
    return {"revision": revision, "newest_change": newest, "hosts": hosts, "read_at": time.time()}
