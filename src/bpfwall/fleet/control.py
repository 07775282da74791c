"""`bpfwall fleet`: what an operator does to the fleet's store, and what it reads back."""

from __future__ import annotations

import json
import time
from typing import Any

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
    policy.effective([new, *others], dict(new.select), {})
    return new


def push(store: Store, name: str, text: str) -> int:
    """Checks and writes policies/NAME; the revision of the write."""
    if not name or "/" in name:
        raise InputError(f"--name: '{name}' is not a policy name (no '/')")
    check_policy(store, name, text)
    return store.put(f"policies/{name}", text)


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
