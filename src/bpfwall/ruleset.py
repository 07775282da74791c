"""The normalised rule set that the compiler, the reference model and the CLI work on.

A condition that is None does not constrain its field. Every value here is
already validated: names resolved to numbers, sets expanded, CIDRs parsed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import shared
from .cidrset import CidrSet

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]


@dataclass(frozen=True)
class IcmpMatch:
    """One ICMP condition: family (4 or 6), type or None for any, code or None for any."""

    family: int
    type: int | None
    code: int | None


@dataclass(frozen=True)
class Limit:
    """A rate limit: count packets (or bytes) per period seconds, burst of them at once."""

    count: int
    period: int  # seconds: 1, 60, 3600
    burst: int
    per_source: bool = False
    bytes: bool = False
    over: bool = False

    def describe(self) -> str:
        unit = {1: "second", 60: "minute", 3600: "hour"}[self.period]
        text = f"{self.count}{' bytes' if self.bytes else ''}/{unit} burst {self.burst}"
        if self.per_source:
            text += " per source"
        return ("over " if self.over else "") + text


@dataclass(frozen=True)
class Rule:
    name: str
    action: str  # accept | drop | reject | ban
    direction: str = "ingress"
    line: int = 0
    interfaces: tuple[str, ...] | None = None
    families: frozenset[int] | None = None  # {4}, {6}
    protos: frozenset[int] | None = None
    # An address condition: the literal prefixes, and the CIDR sets named; the
    # condition holds if the address is in either. src None: no condition.
    src: tuple[Network, ...] | None = None
    dst: tuple[Network, ...] | None = None
    src_sets: tuple[str, ...] = ()
    dst_sets: tuple[str, ...] = ()
    sport: tuple[PortRange, ...] | None = None
    dport: tuple[PortRange, ...] | None = None
    tcp_flags: tuple[int, int] | None = None  # (mask, value): flags & mask == value
    icmp: tuple[IcmpMatch, ...] | None = None
    ct: frozenset[int] | None = None  # shared.CT_* states
    sets: tuple[str, ...] = ()  # the named sets it references, for display
    log: float | None = None  # log records a second (the rule's limit), or None
    limit: Limit | None = None
    ban_for: int | None = None  # seconds, with action ban
    # Egress only: the sending socket's cgroup (a path relative to the cgroup2 mount,
    # matching it and every cgroup below) and its owner's uid.
    cgroup: str | None = None
    user: int | None = None
    implicit: bool = False  # added by bpfwall, not written by the user

    def proto_slots(self) -> set[tuple[int, int]] | None:
        """(family, protocol) pairs the rule accepts, or None for any."""
        if self.families is None and self.protos is None:
            return None
        fams = self.families or {4, 6}
        protos = self.protos if self.protos is not None else range(256)
        return {(f, p) for f in fams for p in protos}


_RULE_FIELDS = tuple(f.name for f in fields(Rule))


def rule_json(r: Rule) -> dict[str, Any]:
    """A rule as the state file keeps it. Written out by hand: dataclasses.asdict copies
    every value deeply, which took most of a second for 10,000 rules."""
    d = {name: getattr(r, name) for name in _RULE_FIELDS}
    for key in ("src", "dst"):
        if d[key] is not None:
            d[key] = [str(n) for n in d[key]]
    for key in ("families", "protos", "ct"):
        if d[key] is not None:
            d[key] = sorted(d[key])
    for key in ("interfaces", "src_sets", "dst_sets", "sets"):
        if d[key] is not None:
            d[key] = list(d[key])
    for key in ("sport", "dport"):
        if d[key] is not None:
            d[key] = [list(p) for p in d[key]]
    if d["tcp_flags"] is not None:
        d["tcp_flags"] = list(d["tcp_flags"])
    if d["icmp"] is not None:
        d["icmp"] = [{"family": m.family, "type": m.type, "code": m.code} for m in d["icmp"]]
    if d["limit"] is not None:
        d["limit"] = asdict(d["limit"])
    return d


@dataclass
class Ruleset:
    rules: list[Rule]
    policy: dict[str, str] = field(default_factory=lambda: {"ingress": "accept", "egress": "accept"})
    interfaces: list[str] = field(default_factory=list)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""
    conntrack: dict[str, Any] = field(default_factory=dict)  # max_entries, timeouts
    group: str | None = None  # may read counters and state (stats, status, exporter)
    # The elements of every CIDR set; not part of to_json (the data plane holds them).
    cidr_sets: dict[str, CidrSet] = field(default_factory=dict)
    # Every file the rule set was read from (rule file, set files): absolute path -> sha256.
    inputs: dict[str, str] = field(default_factory=dict)
    # Sources no ban ever touches: prefixes ("192.0.2.1/32") and set names ("@monitoring").
    never_ban: list[str] = field(default_factory=list)

    def never_ban_prefixes(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(e) for e in self.never_ban if not e.startswith("@")]

    def never_ban_sets(self) -> list[str]:
        return [e[1:] for e in self.never_ban if e.startswith("@")]

    def never_banned(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether never_ban covers addr, with the sets' elements as this object holds them."""
        if any(addr in net for net in self.never_ban_prefixes() if net.version == addr.version):
            return True
        family = 6 if addr.version == 6 else 4
        return any(name in self.cidr_sets and self.cidr_sets[name].contains(family, addr.packed)
                   for name in self.never_ban_sets())

    def set_slots(self) -> dict[str, int]:
        """CIDR set name -> its slot in the set tries."""
        return {n: meta["slot"] for n, meta in self.sets.items() if "slot" in meta}

    def ingress(self) -> list[Rule]:
        return self.direction("ingress")

    def direction(self, direction: str) -> list[Rule]:
        return [r for r in self.rules if r.direction == direction]

    def guarded(self, direction: str) -> list[int]:
        """Indexes (within the direction) of the rules with a limit or a ban: their
        rule_params entries, in this order."""
        return [i for i, r in enumerate(self.direction(direction)) if r.limit or r.action == "ban"]

    def bans_enabled(self) -> bool:
        return any(r.action == "ban" for r in self.rules) or "port_scan" in self.conntrack

    def reject_budget(self) -> dict[str, int]:
        """The budget of reject answers (conntrack.reject_budget, else the kernel's limits)."""
        return self.conntrack.get("reject_budget", shared.REJECT_BUDGET_DEFAULT)

    def cgroups(self) -> list[str]:
        """The cgroup paths the rules name, sorted."""
        return sorted({r.cgroup for r in self.rules if r.cgroup is not None})

    def users(self) -> list[int]:
        """The uids the rules name, sorted."""
        return sorted({r.user for r in self.rules if r.user is not None})

    def uses_ct(self) -> bool:
        return any(r.ct is not None for r in self.rules)

    def needs_egress(self) -> bool:
        """Whether the egress program has anything to do: rules, a drop policy, or
        outgoing flows to track for the ingress rules' sake."""
        return bool(self.direction("egress")) or self.policy["egress"] == "drop" or self.uses_ct()

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [rule_json(r) for r in self.rules],
            "policy": self.policy,
            "interfaces": self.interfaces,
            "sets": self.sets,
            "source": self.source,
            "conntrack": self.conntrack,
            "group": self.group,
            "never_ban": self.never_ban,
            "inputs": self.inputs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ruleset:
        rules = []
        for d in data["rules"]:
            d = dict(d)
            for key in ("src", "dst"):
                if d[key] is not None:
                    d[key] = tuple(ipaddress.ip_network(n) for n in d[key])
            for key in ("families", "protos", "ct"):
                if d.get(key) is not None:
                    d[key] = frozenset(d[key])
            for key in ("interfaces", "sets", "src_sets", "dst_sets"):
                if d.get(key) is not None:
                    d[key] = tuple(d[key])
            for key in ("sport", "dport"):
                if d.get(key) is not None:
                    d[key] = tuple(tuple(p) for p in d[key])
            if d["tcp_flags"] is not None:
                d["tcp_flags"] = tuple(d["tcp_flags"])
            if d["icmp"] is not None:
                d["icmp"] = tuple(IcmpMatch(**m) for m in d["icmp"])
            if d.get("limit") is not None:
                d["limit"] = Limit(**d["limit"])
            rules.append(Rule(**d))
        return cls(
            rules=rules,
            policy=data["policy"],
            interfaces=data["interfaces"],
            sets=data["sets"],
            source=data["source"],
            conntrack=data.get("conntrack", {}),
            group=data.get("group"),
            never_ban=data.get("never_ban", []),
            inputs=data.get("inputs", {}),
        )
