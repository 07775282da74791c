"""`bpfwall import`: an iptables-save dump or an `nft -j list ruleset` to a bpfwall rule file.

Each front end turns its input into an Imported: bpfwall rules as the mappings of the rule
file, sets, policies, and what it could not carry (with the original text). render() writes
the rule file; what was left out becomes comments in it, and the count goes to stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
CIDR_SET_TYPES = ("cidr",)


@dataclass
class Imported:
    source: str  # what it came from: "iptables-save", "nft"
    rules: list[dict[str, Any]] = field(default_factory=list)
    policy: dict[str, str] = field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (original, why)
    notes: list[str] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def skip(self, original: str, why: str) -> None:
        self.skipped.append((original, why))

    def add_rule(self, rule: dict[str, Any], hint: str) -> None:
        """Adds a rule under a unique name made from hint (a comment, or chain and index)."""
        base = NAME_CHARS.sub("-", hint).strip("-")[:28] or "rule"
        name, n = base, 2
        while name in self._names:
            name = f"{base[:28]}-{n}"
            n += 1
        self._names.add(name)
        self.rules.append({"name": name, **rule})


class Unsupported(Exception):
    """A match or target bpfwall cannot express; the message says which."""


def render(imp: Imported) -> str:
    """The rule file: header, policy, sets, rules (one flow mapping a line), then what
    could not be carried, as comments with the original lines."""
    out = [f"# Imported by 'bpfwall import' from {imp.source}.",
           f"# {len(imp.rules)} rules carried, {len(imp.skipped)} could not be (listed at the end).",
           "version: 1"]
    out += [f"# note: {n}" for n in imp.notes]
    if imp.policy:
        out.append("policy: " + _flow(imp.policy))
    if imp.sets:
        out.append("sets:")
        for name, s in imp.sets.items():
            out.append(f"  {_scalar(name)}: " + _flow(s))
    out.append("rules:" if imp.rules else "rules: []")
    for rule in imp.rules:
        out.append("  - " + _flow(rule))
    if imp.skipped:
        out.append("")
        out.append("# Not carried over (bpfwall cannot express these):")
        for original, why in imp.skipped:
            out.append(f"#   {original.strip()}")
            out.append(f"#     ({why})")
    return "\n".join(out) + "\n"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20).strip()


def _scalar(value: str) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
