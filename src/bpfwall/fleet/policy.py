"""A host's effective rule file: the fleet's policies that select it, merged.

A policy is a rule file with two more top-level keys: `select:` (labels that must all
match the host; absent or {} selects every host) and `order:` (an integer, default 0).
The policies that select a host merge in (order, name) order: rules are concatenated, sets
of one name are united, and any other key comes from the last policy that sets it. Every
problem names the policy and line it comes from (policies/NAME:LINE).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .. import config, yamlsrc
from ..cidrset import Element, parse_element
from ..errors import InputError
from ..ruleset import Ruleset

FLEET_KEYS = ("select", "order")


@dataclass
class Policy:
    name: str
    text: str
    data: dict[str, Any]
    lines: dict[yamlsrc.Path, int]
    select: dict[str, str] = field(default_factory=dict)
    order: int = 0

    @property
    def filename(self) -> str:
        return f"policies/{self.name}"

    def selects(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.select.items())


def parse(name: str, text: str) -> Policy:
    """One policy from its text; InputError (policies/NAME:LINE) for bad YAML or a bad
    select or order. The rule file itself is checked when merged, where its sets are known."""
    filename = f"policies/{name}"
    if len(text) > config.RULE_FILE_MAX_BYTES:
        raise InputError(f"{filename}:1: {len(text):,} characters; a policy may have at most "
                         f"{config.RULE_FILE_MAX_BYTES:,}")
    data, lines = yamlsrc.parse(text, filename)
    if not isinstance(data, dict):
        raise InputError(f"{filename}:1: a policy must be a mapping of keys (a rule file)")
    select = data.get("select") or {}
    where = f"{filename}:{lines.get(('select',), 1)}"
    if not isinstance(select, dict):
        raise InputError(f"{where}: select: must be a mapping of labels, such as {{role: web}}")
    for key, value in select.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InputError(f"{where}: select.{key}: a label's value is a word or a number, got {value!r}")
    order = data.get("order", 0)
    if not isinstance(order, int) or isinstance(order, bool):
        raise InputError(f"{filename}:{lines.get(('order',), 1)}: order: must be an integer, got {order!r}")
    return Policy(name, text, data, lines, {str(k): str(v) for k, v in select.items()}, order)


def merge(policies: list[Policy]) -> tuple[dict[str, Any], dict[yamlsrc.Path, int], dict[yamlsrc.Path, str]]:
    """The merged rule file's data, its lines, and the policy each part came from."""
    data: dict[str, Any] = {}
    lines: dict[yamlsrc.Path, int] = {}
    origins: dict[yamlsrc.Path, str] = {}
    rules: list[Any] = []
    sets: dict[str, Any] = {}
    for p in sorted(policies, key=lambda p: (p.order, p.name)):
        for key, value in p.data.items():
            if key in FLEET_KEYS:
                continue
            if key == "rules":
                if not isinstance(value, list):
                    raise InputError(f"{p.filename}:{p.lines.get(('rules',), 1)}: rules: must be a list of rules")
                base = len(rules)
                rules.extend(value)
                _move_lines(p, ("rules",), lambda rest, base=base: ("rules", base + rest[0], *rest[1:]), lines)
                for j in range(len(value)):
                    origins[("rules", base + j)] = p.filename
                if ("rules",) not in lines:
                    lines[("rules",)] = p.lines.get(("rules",), 1)
                    origins[("rules",)] = p.filename
            elif key == "sets":
                if not isinstance(value, dict):
                    raise InputError(f"{p.filename}:{p.lines.get(('sets',), 1)}: sets: must be a mapping of sets")
                if ("sets",) not in lines:
                    lines[("sets",)] = p.lines.get(("sets",), 1)
                    origins[("sets",)] = p.filename
                for name, spec in value.items():
                    _unite(p, name, spec, sets, lines, origins)
            else:
                data[key] = value  # the last policy that sets it
                for path in [q for q in lines if q[0] == key]:
                    del lines[path]
                lines[(key,)] = p.lines.get((key,), 1)
                _move_lines(p, (key,), lambda rest, key=key: (key, *rest), lines)
                origins[(key,)] = p.filename
    if rules:
        data["rules"] = rules
    if sets:
        data["sets"] = sets
    return data, lines, origins


def _move_lines(p: Policy, prefix: yamlsrc.Path, where: Any, lines: dict[yamlsrc.Path, int]) -> None:
    """Copies the lines of p's paths below prefix to where(the rest of the path)."""
    n = len(prefix)
    for path, line in p.lines.items():
        if len(path) > n and path[:n] == prefix:
            lines[where(path[n:])] = line


def _unite(p: Policy, name: str, spec: Any, sets: dict[str, Any], lines: dict[yamlsrc.Path, int],
           origins: dict[yamlsrc.Path, str]) -> None:
    """Set name of policy p into sets: the first declaration as it is, a later one united
    with it (the same type; elements and files added; fleet if either is)."""
    here = f"{p.filename}:{p.lines.get(('sets', name), 1)}"
    if name not in sets:
        sets[name] = dict(spec) if isinstance(spec, dict) else spec
        lines[("sets", name)] = p.lines.get(("sets", name), 1)
        _move_lines(p, ("sets", name), lambda rest: ("sets", name, *rest), lines)
        origins[("sets", name)] = p.filename
        return
    first = sets[name]
    if not isinstance(spec, dict) or not isinstance(first, dict):
        raise InputError(f"{here}: sets.{name}: must be a mapping such as {{type: cidr, elements: [...]}}")
    if spec.get("type") != first.get("type"):
        raise InputError(f"{here}: sets.{name}: type {spec.get('type')!r} cannot be united with the "
                         f"{first.get('type')!r} set of that name in {origins[('sets', name)]}")
    for key in ("elements", "files"):
        extra = spec.get(key) or []
        if not isinstance(extra, list):
            raise InputError(f"{here}: sets.{name}.{key}: must be a list")
        base = len(first.get(key) or [])
        first[key] = list(first.get(key) or []) + extra
        for j in range(len(extra)):
            path = ("sets", name, key, base + j)
            lines[path] = p.lines.get(("sets", name, key, j), p.lines.get(("sets", name), 1))
            origins[path] = p.filename
    if spec.get("fleet"):
        first["fleet"] = True


NO_FILES = config.FileFence(None)  # a host that reads no set file for the fleet


@dataclass
class Effective:
    """A host's rule set from its policies, and what the agent needs to keep its fleet sets."""

    ruleset: Ruleset
    warnings: list[str]  # store elements that are not addresses
    fleet_static: dict[str, set[Element]]  # each fleet set in force -> its elements from the policies


def effective(policies: list[Policy], labels: dict[str, str], fleet_sets: dict[str, set[str]],
              fence: config.FileFence = NO_FILES) -> Effective:
    """The host's rule set from the policies that select it, with the elements the store
    holds for its fleet sets; set files only from within the fence. InputError for a
    problem of the merged file (a clash, a set the host lacks)."""
    chosen = [p for p in policies if p.selects(labels)]
    if not chosen:
        raise InputError("no policy selects this host (its labels: "
                         f"{', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or 'none'})")
    data, lines, origins = merge(chosen)
    ruleset = config.from_data(data, lines, "policies", origins, fence)
    ruleset.source = "fleet: " + ", ".join(sorted(p.name for p in chosen))
    warnings: list[str] = []
    fleet_static: dict[str, set[Element]] = {}
    for name, cidr_set in ruleset.cidr_sets.items():
        if not (data.get("sets", {}).get(name) or {}).get("fleet"):
            continue
        fleet_static[name] = set(cidr_set.elements)  # from the policies' elements: and files:
        elements, bad = store_elements(fleet_sets.get(name, set()))
        warnings += [f"sets/{name}/{text}: {err}" for text, err in bad]
        cidr_set.elements.update(elements)
    return Effective(ruleset, warnings, fleet_static)


def store_elements(texts: set[str] | list[str]) -> tuple[list[Element], list[tuple[str, str]]]:
    """The elements of a fleet set's keys, and the keys that are not addresses or CIDRs."""
    good, bad = [], []
    for text in texts:
        element, err = parse_element(text)
        if err:
            bad.append((text, err))
        else:
            good.append(element)
    return good, bad


def digest(policies: list[Policy], labels: dict[str, str]) -> str:
    """What the effective rule file is made of (the selected policies' texts, in order):
    equal digests, equal rule sets, whatever else changed in the store."""
    chosen = sorted((p for p in policies if p.selects(labels)), key=lambda p: (p.order, p.name))
    h = hashlib.sha256(json.dumps([[p.name, p.text] for p in chosen]).encode())
    return h.hexdigest()


def parse_canary(name: str, value: bytes) -> dict[str, Any] | None:
    """canary/NAME's value: {"select": labels of the canary hosts, "text": the policy they try};
    None when it is not that (a canary key written by hand, say), which no host takes."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if (not isinstance(data, dict) or not isinstance(data.get("text"), str)
            or not isinstance(data.get("select"), dict) or not data["select"]):
        return None
    return {"select": {str(k): str(v) for k, v in data["select"].items()}, "text": data["text"]}
