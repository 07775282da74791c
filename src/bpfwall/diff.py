"""What applying a rule file would change against the rule set in force (`check --diff`),
and whether they differ at all (`status`): rules by name, with the keys that changed,
policies and other top-level keys, CIDR set elements added and removed."""

from __future__ import annotations

from typing import Any

from .render import file_dict, rule_dict
from .ruleset import Ruleset

SHOW_ELEMENTS = 5  # elements named per set change; the rest are counted


def compare(old: Ruleset, new: Ruleset, old_elements: dict[str, list[str]] | None = None,
            new_elements: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The changes from old to new. Elements None: set contents are not compared."""
    changes: dict[str, Any] = {"rules": {"added": [], "removed": [], "changed": [], "moved": []},
                               "settings": {}, "sets": {}}
    for direction in ("ingress", "egress"):
        before = {r.name: rule_dict(r) for r in old.direction(direction) if not r.implicit}
        after = {r.name: rule_dict(r) for r in new.direction(direction) if not r.implicit}
        rules = changes["rules"]
        rules["added"] += [{"name": n, "direction": direction} for n in after if n not in before]
        rules["removed"] += [{"name": n, "direction": direction} for n in before if n not in after]
        for name in after.keys() & before.keys():
            keys = sorted(k for k in after[name].keys() | before[name].keys()
                          if after[name].get(k) != before[name].get(k))
            if keys:
                rules["changed"].append({"name": name, "direction": direction, "fields": {
                    k: {"from": before[name].get(k), "to": after[name].get(k)} for k in keys}})
        kept_before = [n for n in before if n in after]
        kept_after = [n for n in after if n in before]
        if kept_before != kept_after:
            rules["moved"].append({"direction": direction, "order": kept_after})
    old_file, new_file = file_dict(old, None), file_dict(new, None)
    for key in sorted((old_file.keys() | new_file.keys()) - {"rules", "sets", "version"}):
        if old_file.get(key) != new_file.get(key):
            changes["settings"][key] = {"from": old_file.get(key), "to": new_file.get(key)}
    old_sets = {n for n, m in old.sets.items() if m.get("type") == "cidr"}
    new_sets = {n for n, m in new.sets.items() if m.get("type") == "cidr"}
    for name in sorted(old_sets | new_sets):
        if name not in new_sets:
            changes["sets"][name] = {"removed": True}
        elif name not in old_sets:
            changes["sets"][name] = {"added": True, "elements": len((new_elements or {}).get(name, []))}
        elif old_elements is not None and new_elements is not None:
            was, now = set(old_elements.get(name, [])), set(new_elements.get(name, []))
            plus, minus = sorted(now - was), sorted(was - now)
            if plus or minus:
                changes["sets"][name] = {"elements_added": len(plus), "elements_removed": len(minus),
                                         "first_added": plus[:SHOW_ELEMENTS], "first_removed": minus[:SHOW_ELEMENTS]}
    return changes


def differs(changes: dict[str, Any]) -> bool:
    return any(changes["rules"].values()) or bool(changes["settings"]) or bool(changes["sets"])


def lines(changes: dict[str, Any]) -> list[str]:
    """The changes for people, one a line, as diff marks them."""
    out = []
    r = changes["rules"]
    out += [f"+ rule {x['name']} ({x['direction']})" for x in r["added"]]
    out += [f"- rule {x['name']} ({x['direction']})" for x in r["removed"]]
    for x in r["changed"]:
        fields = "; ".join(f"{k}: {v['from']} -> {v['to']}" for k, v in x["fields"].items())
        out.append(f"~ rule {x['name']} ({x['direction']}): {fields}")
    out += [f"~ {x['direction']} rule order: {', '.join(x['order'])}" for x in r["moved"]]
    out += [f"~ {k}: {v['from']} -> {v['to']}" for k, v in changes["settings"].items()]
    for name, s in changes["sets"].items():
        if s.get("removed"):
            out.append(f"- set {name}")
        elif s.get("added"):
            out.append(f"+ set {name} ({s['elements']} elements)")
        else:
            more_plus = s["elements_added"] - len(s["first_added"])
            more_minus = s["elements_removed"] - len(s["first_removed"])
            out.append(f"~ set {name}: +{s['elements_added']} -{s['elements_removed']} elements"
                       + (f"; adds {', '.join(s['first_added'])}{f' and {more_plus} more' if more_plus else ''}"
                          if s["first_added"] else "")
                       + (f"; removes {', '.join(s['first_removed'])}"
                          f"{f' and {more_minus} more' if more_minus else ''}" if s["first_removed"] else ""))
    return out
