"""A normalised rule set written back as a rule file: what `show` prints and `check --diff`
compares. Loading the text again gives the same rules (a round trip the unit tests draw at
random): names for protocols, ICMP types and connection states where the rule language has
them, numbers elsewhere; port sets as the ports they stood for, CIDR sets by reference.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import names, owners, shared
from .ruleset import IcmpMatch, Limit, Rule, Ruleset

UNITS = {1: "second", 60: "minute", 3600: "hour"}
DEFAULT_LOG_RATE = 10.0  # records a second of `log: true`


def rule_dict(r: Rule) -> dict[str, Any]:
    """The rule as the rule file writes it (keys in the order docs/rule-language.md lists them)."""
    d: dict[str, Any] = {"name": r.name}
    if r.direction != "ingress":
        d["direction"] = r.direction
    if r.interfaces is not None:
        d["interfaces"] = list(r.interfaces)
    if r.families is not None and len(r.families) == 1:
        d["family"] = f"ipv{next(iter(r.families))}"
    for key, nets, sets in (("src", r.src, r.src_sets), ("dst", r.dst, r.dst_sets)):
        if nets is not None or sets:
            d[key] = [str(n) for n in nets or ()] + [f"@{s}" for s in sets]
    if r.protos is not None:
        d["proto"] = [names.PROTOCOL_NAMES.get(p, p) for p in sorted(r.protos)]
    for key, ports in (("sport", r.sport), ("dport", r.dport)):
        if ports is not None:
            d[key] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in ports]
    if r.tcp_flags is not None:
        mask, value = r.tcp_flags
        flags = sorted(names.TCP_FLAGS.items(), key=lambda kv: kv[1])
        d["tcp_flags"] = ",".join([n for n, bit in flags if value & bit] +
                                  [f"!{n}" for n, bit in flags if mask & bit and not value & bit])
    if r.icmp is not None:
        d.update(_icmp(r.icmp))
    if r.ct is not None:
        d["ct"] = [shared.CT_STATE_NAMES[s] for s in sorted(r.ct)]
    if r.cgroup is not None:
        d["cgroup"] = r.cgroup
    if r.user is not None:
        d["user"] = owners.user_label(r.user)
    d["action"] = r.action
    if r.ban_for is not None:
        d["ban_for"] = f"{r.ban_for}s"
    if r.log is not None:
        d["log"] = True if r.log == DEFAULT_LOG_RATE else _rate(r.log)
    if r.limit is not None:
        d["limit"] = _limit(r.limit)
    # A list of one is written as its element, as a person writes it.
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in d.items()}


def _rate(per_second: float) -> str:
    for period, unit in ((1, "second"), (60, "minute"), (3600, "hour")):
        n = per_second * period
        if abs(n - round(n)) < 1e-6 and round(n) >= 1:
            return f"{round(n)}/{unit}"
    return f"{max(1, round(per_second * 3600))}/hour"


def _limit(lim: Limit) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": f"{lim.count}/{UNITS[lim.period]}", "burst": lim.burst}
    if lim.per_source:
        out["per"] = "source"
    if lim.bytes:
        out["bytes"] = True
    if lim.over:
        out["over"] = True
    return out


def _icmp(matches: tuple[IcmpMatch, ...]) -> dict[str, Any]:
    """icmp_type and icmp_code: a rule's matches are the product of its types and codes in
    each of its ICMP families, so the types of one family and the codes give the rest. A
    type is written by the name both families share where there is one."""
    by_family: dict[int, set[int | None]] = {}
    codes: set[int | None] = set()
    for m in matches:
        by_family.setdefault(m.family, set()).add(m.type)
        codes.add(m.code)
    out: dict[str, Any] = {}
    if None not in set().union(*by_family.values()):
        if len(by_family) == 1:
            (family, types), = by_family.items()
            table = names.ICMP_TYPES if family == 4 else names.ICMPV6_TYPES
            by_number = {v: k for k, v in table.items()}
            out["icmp_type"] = [by_number.get(t, t) for t in sorted(types)]  # type: ignore[arg-type]
        else:
            shared_names = [n for n in names.ICMP_TYPES if n in names.ICMPV6_TYPES
                            and names.ICMP_TYPES[n] in by_family[4] and names.ICMPV6_TYPES[n] in by_family[6]]
            out["icmp_type"] = shared_names
    if None not in codes:
        out["icmp_code"] = sorted(codes)  # type: ignore[type-var]
    return out


def conntrack_dict(ct: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ct.get("max_entries", shared.CT_MAX_ENTRIES_DEFAULT) != shared.CT_MAX_ENTRIES_DEFAULT:
        out["max_entries"] = ct["max_entries"]
    timeouts = {k: v for k, v in ct.get("timeouts", {}).items() if shared.CT_TIMEOUT_DEFAULTS.get(k) != v}
    if timeouts:
        out["timeouts"] = timeouts
    if "syn_cookies" in ct:
        sc = ct["syn_cookies"]
        out["syn_cookies"] = {"ports": sc["ports"], "rate": f"{sc['count']}/{UNITS[sc['period']]}",
                              "burst": sc["burst"]}
    if "port_scan" in ct:
        ps = ct["port_scan"]
        out["port_scan"] = {"ports": ps["ports"], "window": f"{ps['window']}s", "ban_for": f"{ps['ban_for']}s"}
    rb = ct.get("reject_budget")
    if rb and rb != shared.REJECT_BUDGET_DEFAULT:
        out["reject_budget"] = {"rate": f"{rb['count']}/{UNITS[rb['period']]}", "burst": rb["burst"],
                                "per_source": f"{rb['source_count']}/{UNITS[rb['source_period']]}",
                                "source_burst": rb["source_burst"]}
    return out


def file_dict(ruleset: Ruleset, elements: dict[str, list[str]] | None) -> dict[str, Any]:
    """The rule file as a mapping. elements: each CIDR set's elements (None: leave them out)."""
    d: dict[str, Any] = {"version": 1}
    if ruleset.interfaces:
        d["interfaces"] = list(ruleset.interfaces)
    if ruleset.group:
        d["group"] = ruleset.group
    if ruleset.never_ban:
        d["never_ban"] = list(ruleset.never_ban)
    d["policy"] = dict(ruleset.policy)
    ct = conntrack_dict(ruleset.conntrack)
    if ct:
        d["conntrack"] = ct
    cidr_sets = {n: m for n, m in ruleset.sets.items() if m.get("type") == "cidr"}
    if cidr_sets:
        d["sets"] = {n: {"type": "cidr", "elements": (elements or {}).get(n, [])} for n in sorted(cidr_sets)}
    d["rules"] = [rule_dict(r) for r in ruleset.rules if not r.implicit]
    return d


def rule_file(ruleset: Ruleset, elements: dict[str, list[str]] | None, header: str = "",
              sizes: dict[str, int] | None = None) -> str:
    """The rule file as text: one rule a line, sets' elements one a line (or, with elements
    None, each set's size from sizes)."""
    d = file_dict(ruleset, elements)
    out = [f"# {line}" for line in header.splitlines()]
    for key, value in d.items():
        if key == "rules":
            out.append("rules:" if value else "rules: []")
            out += [f"  - {_flow(r)}" for r in value]
        elif key == "sets":
            out.append("sets:")
            for name, s in value.items():
                if elements is None:
                    size = (sizes or {}).get(name, ruleset.sets[name].get("size", 0))
                    out.append(f"  {name}: {{type: cidr}}  # {size} elements, not shown (--no-elements)")
                    continue
                out.append(f"  {name}:")
                out.append("    type: cidr")
                out.append("    elements: []" if not s["elements"] else "    elements:")
                out += [f"      - {_flow(e)}" for e in s["elements"]]
        else:
            out.append(f"{key}: {_flow(value)}")
    return "\n".join(out) + "\n"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20).strip() \
        .removesuffix("...").strip()
