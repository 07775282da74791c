"""The rule file: load, validate, and normalise into a Ruleset, or fail with FILE:LINE.

Structure (which keys exist, their types and enumerations) is checked by
pydantic models; values (CIDRs, ports, names, sets) by the parsers below, so
that every problem is one line naming the file and line it comes from.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from . import cidrset, names, owners, shared, yamlsrc
from .cidrset import CidrSet
from .errors import InputError, clip, excerpt
from .inputs import (  # noqa: F401  (read_regular_file, digest: config's API too)
    RULE_FILE_MAX_BYTES,
    SET_FILE_MAX_BYTES,
    digest,
    inputs_unchanged,
    read_regular_file,
)
from .ruleset import IcmpMatch, Limit, Network, PortRange, Rule, Ruleset

RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
IFACE_NAME = re.compile(r"^[^/\s:]{1,15}$")
SET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ESSENTIAL_RULE = "*essential-icmpv6"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SetModel(_Strict):
    type: Literal["cidr", "port"]
    elements: list[Any] = []
    files: list[str] = []
    fleet: bool = False  # its elements also come from the fleet's store (bpfwall agent)


class PolicyModel(_Strict):
    ingress: Literal["accept", "drop"] = "accept"
    egress: Literal["accept", "drop"] = "accept"


class SynCookiesModel(_Strict):
    ports: list[Any]
    rate: Any = "1000/second"
    burst: int | None = None


class PortScanModel(_Strict):
    ports: int = 20
    window: Any = "10s"
    ban_for: Any = "10m"


class RejectBudgetModel(_Strict):
    rate: Any = None
    burst: int | None = None
    per_source: Any = None
    source_burst: int | None = None


class ConntrackModel(_Strict):
    max_entries: int = shared.CT_MAX_ENTRIES_DEFAULT
    timeouts: dict[str, Any] = {}
    syn_cookies: SynCookiesModel | None = None
    port_scan: PortScanModel | None = None
    reject_budget: RejectBudgetModel | None = None


class LimitModel(_Strict):
    rate: Any
    burst: int | None = None
    per: Literal["source"] | None = None
    bytes: bool = False
    over: bool = False


class RuleModel(_Strict):
    name: str
    action: Literal["accept", "drop", "reject", "ban"]
    direction: Literal["ingress", "egress"] = "ingress"
    interfaces: Any = None
    family: Literal["ipv4", "ipv6"] | None = None
    src: Any = None
    dst: Any = None
    proto: Any = None
    sport: Any = None
    dport: Any = None
    tcp_flags: str | None = None
    icmp_type: Any = None
    icmp_code: Any = None
    ct: Any = None
    ban_for: Any = None
    log: Any = None
    limit: Any = None
    cgroup: Any = None
    user: Any = None


class FileModel(_Strict):
    version: Literal[1]
    interfaces: list[str] = []
    policy: PolicyModel | None = None
    sets: dict[str, SetModel] = {}
    rules: list[RuleModel] = []
    conntrack: ConntrackModel | None = None
    group: str | None = None
    never_ban: Any = None


LIMIT_BURST_DEFAULT = 5  # packets, as nftables' limit
BAN_FOR_DEFAULT = 600  # seconds, as fail2ban's bantime

GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


class _Problems:
    """Collects problems as FILE:LINE lines, resolving a key path to its line. origins: the
    file a path came from (its longest prefix found there), where the data was merged from
    several (the fleet's policies); filename for the rest."""

    def __init__(self, filename: str, lines: dict[yamlsrc.Path, int],
                 origins: dict[yamlsrc.Path, str] | None = None) -> None:
        self.filename = filename
        self.lines = lines
        self.origins = origins or {}
        self.items: list[str] = []

    def file_of(self, path: yamlsrc.Path) -> str:
        path = tuple(path)
        while path and path not in self.origins:
            path = path[:-1]
        return self.origins.get(path, self.filename)

    def line_of(self, path: yamlsrc.Path) -> int:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def add(self, path: yamlsrc.Path, message: str) -> None:
        self.items.append(clip(f"{self.file_of(path)}:{self.line_of(path)}: {_dotted(path)}{message}"))

    def add_raw(self, message: str) -> None:
        self.items.append(message)


def _dotted(path: yamlsrc.Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, str) and (part != part.strip() or not part.isprintable()):
            part = repr(part)  # a key with invisible characters (' version'), shown as it is
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"{out}: " if out else ""


SET_MAX_ELEMENTS = 1 << 24  # what the set tries hold (generation.SET_CAPACITY)


def load(path: str) -> Ruleset:
    """Reads and validates a rule file; raises InputError listing every problem."""
    try:
        raw = read_regular_file(path, RULE_FILE_MAX_BYTES, "rule file")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    ruleset = loads(text, path)
    ruleset.inputs[os.path.abspath(path)] = digest(raw)
    return ruleset


def loads(text: str, filename: str = "<rules>") -> Ruleset:
    if len(text) > RULE_FILE_MAX_BYTES:
        raise InputError(f"{filename}:1: {len(text):,} characters; a rule file may have at most "
                         f"{RULE_FILE_MAX_BYTES:,}")
    data, lines = yamlsrc.parse(text, filename)
    if data is None:
        raise InputError(f"{filename}:1: the rule file is empty (it needs at least 'version: 1')")
    if not isinstance(data, dict):
        raise InputError(f"{filename}:1: the rule file must be a mapping of keys")
    return from_data(data, lines, filename)


@dataclass(frozen=True)
class FileFence:
    """Where the set files of a rule set that came over the network (a fleet policy) may be
    read from. Such a policy's author may not read the host's files: a policy naming
    /etc/shadow must neither make the agent read it nor bring its lines back in an error.
    root: the only directory set files may be in (the agent's --files-dir; None: no set
    file at all); names are relative to it, without '..', and may not lead out of it by
    a link. read: False checks the names only (a policy checked before it is pushed, on
    a machine that does not hold the hosts' files). Lines of these files are never
    quoted in an error."""

    root: str | None
    read: bool = True


def from_data(data: dict[str, Any], lines: dict[yamlsrc.Path, int], filename: str,
              origins: dict[yamlsrc.Path, str] | None = None, fence: FileFence | None = None) -> Ruleset:
    """A rule file's parsed data (yamlsrc.parse) to a Ruleset; origins as for _Problems.
    fence: set files come only from there (None: a local rule file, whose set files are
    relative to it and which its author can read)."""
    problems = _Problems(filename, lines, origins)
    try:
        model = FileModel.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            problems.add(err["loc"], _pydantic_message(err))
        raise InputError(problems.items) from None
    ruleset = _Normaliser(model, data, problems, filename, fence).run()
    if problems.items:
        raise InputError(problems.items)
    return ruleset


def _pydantic_message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if kind.endswith("_type") or kind == "literal_error":
        return f"{msg}, got {excerpt(repr(err.get('input')))}"
    return msg


def _set_file_entries(text: str, path: str) -> list[tuple[str, Any]]:
    """A set file's values (one a line, '#' starts a comment), each with where it stands."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip() if "#" in line else line.strip()
        if value:
            out.append((value, (path, n)))
    return out


def _where(where: Any) -> str:
    """FILE:LINE, from the text itself or a set file's (path, line)."""
    return where if isinstance(where, str) else f"{where[0]}:{where[1]}"


class _Normaliser:
    def __init__(self, model: FileModel, raw: dict[str, Any], problems: _Problems, filename: str,
                 fence: FileFence | None = None):
        self.model = model
        self.raw = raw
        self.p = problems
        self.filename = filename
        self.fence = fence
        self.base_dir = os.path.dirname(os.path.abspath(filename))
        self.cidr_sets: dict[str, CidrSet] = {}
        self.port_sets: dict[str, list[PortRange]] = {}
        self.inputs: dict[str, str] = {}  # set files read: absolute path -> digest

    def _fenced_path(self, name: str, where: tuple) -> str | None:
        """The path of set file `name` under the fence, or None (a problem added, or the
        fence only checks names)."""
        fence = self.fence
        assert fence is not None
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or ".." in parts or not name.strip():
            self.p.add(where, f"set file '{excerpt(name)}': a fleet policy names set files relative to the "
                              "agent's --files-dir, without '..'")
            return None
        if not fence.read:
            return None
        if fence.root is None:
            self.p.add(where, f"set file '{excerpt(name)}': this agent reads no set files (it was given no "
                              "--files-dir)")
            return None
        root = os.path.realpath(fence.root)
        full = os.path.join(root, name)
        if os.path.commonpath([root, os.path.realpath(full)]) != root:
            self.p.add(where, f"set file '{excerpt(name)}': leads out of the agent's --files-dir (a link)")
            return None
        return full

    def run(self) -> Ruleset:
        m = self.model
        for i, name in enumerate(m.interfaces):
            if not IFACE_NAME.match(name):
                self.p.add(("interfaces", i), f"'{excerpt(name)}' is not an interface name")
        if m.group is not None:
            self._check_group(m.group)
        for name, s in m.sets.items():
            self._load_set(name, s)
        if not m.rules and m.policy is None:
            self.p.add(("rules",), "no rules and no policy: the file would do nothing")
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for i, rm in enumerate(m.rules):
            rule = self._rule(i, rm)
            if rm.name in seen:
                first = ("rules", seen[rm.name])
                where = self.p.file_of(first)
                at = (f"line {self.p.line_of(first)}" if where == self.p.file_of(("rules", i))
                      else f"{where}:{self.p.line_of(first)}")
                self.p.add(("rules", i, "name"), f"duplicate rule name '{rm.name}' (first at {at})")
            seen.setdefault(rm.name, i)
            if rule is not None:
                rules.append(rule)
        for direction in ("ingress", "egress"):
            guarded = [r for r in rules if r.direction == direction and (r.limit or r.action == "ban")]
            if len(guarded) > shared.MAX_PARAMS:
                self.p.add(("rules",), f"{len(guarded)} {direction} rules have a limit or ban: at most "
                           f"{shared.MAX_PARAMS}")
        policy = (m.policy or PolicyModel()).model_dump()
        for direction in ("ingress", "egress"):
            if policy[direction] == "drop":
                rules.append(Rule(
                    name=ESSENTIAL_RULE, action="accept", direction=direction,
                    protos=frozenset({names.ICMPV6}),
                    icmp=tuple(IcmpMatch(6, t, None) for t in names.ESSENTIAL_ICMPV6_TYPES),
                    implicit=True,
                ))
        conntrack = self._conntrack(m.conntrack or ConntrackModel())
        never_ban = self._never_ban(m.never_ban)
        sets_meta = {
            n: {"type": s.type, "size": len(self.cidr_sets.get(n) or self.port_sets.get(n) or [])}
            for n, s in m.sets.items()
        }
        # A CIDR set's slot in the set tries: stable for a given rule file.
        for slot, n in enumerate(sorted(self.cidr_sets)):
            sets_meta[n]["slot"] = slot
        if len(self.cidr_sets) > shared.MAX_SETS:
            self.p.add(("sets",), f"{len(self.cidr_sets)} address sets: at most {shared.MAX_SETS}")
        return Ruleset(rules=rules, policy=policy, interfaces=list(m.interfaces),
                       sets=sets_meta, source=os.path.abspath(self.filename), conntrack=conntrack,
                       cidr_sets=self.cidr_sets, group=m.group, never_ban=never_ban, inputs=self.inputs)

    def _never_ban(self, value: Any) -> list[str]:
        """Addresses no ban touches: prefixes (as strings) and '@set' names."""
        if value is None:
            return []
        nets, refs = self._addresses(value, ("never_ban",), [])
        if len(refs) > shared.MAX_NEVER_BAN_SETS:
            self.p.add(("never_ban",), f"{len(refs)} sets: at most {shared.MAX_NEVER_BAN_SETS} (put the "
                       "addresses of the others in one of them)")
        return [str(n) for n in nets or ()] + [f"@{r}" for r in refs]

    def _check_group(self, group: str) -> None:
        """The group must be a name (a number would be read as a gid on one host and
        not on the next). Whether it exists is apply's question: check runs anywhere."""
        if not GROUP_NAME.match(group):
            self.p.add(("group",), f"'{group}' is not a group name")

    def _conntrack(self, c: ConntrackModel) -> dict[str, Any]:
        path = ("conntrack",)
        if not 1024 <= c.max_entries <= 1 << 24:
            self.p.add(path + ("max_entries",), f"{c.max_entries} is out of range (1024-16777216)")
        timeouts = dict(shared.CT_TIMEOUT_DEFAULTS)
        for key, value in c.timeouts.items():
            where = path + ("timeouts", key)
            if key not in timeouts:
                self.p.add(where, f"unknown timeout (known: {', '.join(timeouts)})")
                continue
            secs, err = parse_duration(value)
            if err:
                self.p.add(where, err)
            else:
                timeouts[key] = secs
        out: dict[str, Any] = {"max_entries": c.max_entries, "timeouts": timeouts}
        if c.syn_cookies is not None:
            out["syn_cookies"] = self._syn_cookies(c.syn_cookies, path + ("syn_cookies",))
        if c.port_scan is not None:
            out["port_scan"] = self._port_scan(c.port_scan, path + ("port_scan",))
        if c.reject_budget is not None:
            out["reject_budget"] = self._reject_budget(c.reject_budget, path + ("reject_budget",))
        return out

    def _reject_budget(self, rb: RejectBudgetModel, path: yamlsrc.Path) -> dict[str, Any]:
        """Answers a second for all sources (rate, burst) and for each (per_source,
        source_burst); what is not given keeps the kernel's defaults."""
        out = dict(shared.REJECT_BUDGET_DEFAULT)
        for rate_key, burst_key, prefix in (("rate", "burst", ""), ("per_source", "source_burst", "source_")):
            rate, burst = getattr(rb, rate_key), getattr(rb, burst_key)
            if rate is not None:
                count, period, err = parse_limit_rate(rate)
                if err:
                    self.p.add(path + (rate_key,), err)
                else:
                    out[prefix + "count"], out[prefix + "period"] = count, period
            if burst is not None:
                if not 1 <= burst <= 1 << 20:
                    self.p.add(path + (burst_key,), f"burst {burst} is out of range (1-1048576)")
                else:
                    out[prefix + "burst"] = burst
        return out

    def _syn_cookies(self, sc: SynCookiesModel, path: yamlsrc.Path) -> dict[str, Any]:
        ports: set[int] = set()
        for i, value in enumerate(sc.ports):
            rng, err = parse_port_range(value)
            if err or rng is None:
                self.p.add(path + ("ports", i), err or "not a port")
                continue
            ports.update(range(rng[0], rng[1] + 1))
        if not ports:
            self.p.add(path + ("ports",), "name at least one TCP port")
        if len(ports) > shared.MAX_SYN_PORTS:
            self.p.add(path + ("ports",), f"{len(ports)} ports: at most {shared.MAX_SYN_PORTS}")
        count, period, err = parse_limit_rate(sc.rate)
        if err:
            self.p.add(path + ("rate",), err)
            count, period = 1, 1
        burst = sc.burst if sc.burst is not None else count
        if not 1 <= burst < 1 << 32:
            self.p.add(path + ("burst",), f"burst {burst} is out of range (1-4294967295)")
        return {"ports": sorted(ports), "count": count, "period": period, "burst": burst}

    def _port_scan(self, ps: PortScanModel, path: yamlsrc.Path) -> dict[str, Any]:
        if not 1 <= ps.ports <= 200:
            self.p.add(path + ("ports",), f"{ps.ports} is out of range (1-200 distinct ports)")
        window, err = parse_duration(ps.window)
        if err:
            self.p.add(path + ("window",), err)
        ban_for, err2 = parse_duration(ps.ban_for)
        if err2:
            self.p.add(path + ("ban_for",), err2)
        return {"ports": ps.ports, "window": window or 1, "ban_for": ban_for or 1}

    # --- sets ----------------------------------------------------------------------------

    def _load_set(self, name: str, s: SetModel) -> None:
        path = ("sets", name)
        if not SET_NAME.match(name):
            self.p.add(path, f"'{excerpt(name)}' is not a valid set name")
        # (value, where): where is FILE:LINE, or a set file's (path, line), so that a
        # million lines of a set file do not each build a text that is never shown.
        entries: list[tuple[Any, Any]] = []
        for i, e in enumerate(s.elements):
            where = path + ("elements", i)
            entries.append((e, f"{self.p.file_of(where)}:{self.p.line_of(where)}"))
        for i, f in enumerate(s.files):
            if self.fence is None:
                full = os.path.join(self.base_dir, f)
            else:
                fenced = self._fenced_path(f, path + ("files", i))
                if fenced is None:
                    continue
                full = fenced
            try:
                raw = read_regular_file(full, SET_FILE_MAX_BYTES, "set file", nofollow=self.fence is not None)
                self.inputs[os.path.abspath(full)] = digest(raw)
                text = raw.decode("utf-8")
            except OSError as exc:
                self.p.add(path + ("files", i), f"cannot read set file {full}: {exc.strerror or exc}")
                continue
            except InputError as exc:
                self.p.add(path + ("files", i), f"set file {exc.problems[0]}")
                continue
            except UnicodeDecodeError as exc:
                self.p.add(path + ("files", i), f"set file {full}: not UTF-8 text ({exc.reason})")
                continue
            entries.extend(_set_file_entries(text, full))
        if len(entries) > SET_MAX_ELEMENTS:
            self.p.add(path, f"{len(entries):,} elements; a set may have at most {SET_MAX_ELEMENTS:,}")
            entries = []
        if s.type == "cidr":
            cset = CidrSet(name)
            add = cset.elements.add
            parse = cidrset.parse_element
            for value, where in entries:
                if not isinstance(value, str):
                    self.p.add_raw(f"{_where(where)}: set '{name}': {value!r} is not an address or CIDR")
                    continue
                element, err = parse(value)
                if err and self.fence is not None and not isinstance(where, str):
                    # A line of a file on the host: its author may not read it, so it is not shown.
                    self.p.add_raw(f"{_where(where)}: set '{name}': not an address or CIDR (the line "
                                   "is not shown: it is a file of the host's)")
                elif err:
                    self.p.add_raw(f"{_where(where)}: set '{name}': {err}")
                else:
                    add(element)
            self.cidr_sets[name] = cset
        else:
            ports = []
            for value, where in entries:
                rng, err = parse_port_range(value)
                if err:
                    self.p.add_raw(f"{_where(where)}: set '{name}': {err}")
                else:
                    ports.append(rng)
            self.port_sets[name] = ports

    # --- rules ---------------------------------------------------------------------------

    def _rule(self, i: int, rm: RuleModel) -> Rule | None:
        path: yamlsrc.Path = ("rules", i)
        before = len(self.p.items)
        if not RULE_NAME.match(rm.name):
            self.p.add(path + ("name",), f"'{excerpt(rm.name)}' is not a valid rule name "
                       "(1-32 of A-Z a-z 0-9 _ . -)")
        limit = self._limit(rm.limit, path + ("limit",))
        ban_for = self._ban_for(rm, path)

        interfaces = None
        if rm.interfaces is not None:
            interfaces = tuple(self._names(rm.interfaces, path + ("interfaces",)))
        families = None
        if rm.family is not None:
            families = frozenset({4 if rm.family == "ipv4" else 6})
        used_sets: list[str] = []
        src, src_sets = self._addresses(rm.src, path + ("src",), used_sets)
        dst, dst_sets = self._addresses(rm.dst, path + ("dst",), used_sets)
        for key, nets, refs in (("src", src, src_sets), ("dst", dst, dst_sets)):
            if nets is not None and families is not None and not refs:
                if not any(n.version in families for n in nets):
                    self.p.add(path + (key,), f"no address of family {rm.family}: the rule can "
                               "never match")
        if src and dst and not src_sets and not dst_sets:
            if not {n.version for n in src} & {n.version for n in dst}:
                self.p.add(path + ("dst",), "src and dst have no address family in common: the "
                           "rule can never match")
        protos = self._protos(rm.proto, path + ("proto",))
        sport = self._ports(rm.sport, path + ("sport",), protos, used_sets)
        dport = self._ports(rm.dport, path + ("dport",), protos, used_sets)
        tcp_flags = self._tcp_flags(rm.tcp_flags, path + ("tcp_flags",), protos)
        icmp = self._icmp(rm, path, protos, families)
        ct = self._ct(rm.ct, path + ("ct",))
        log = self._log(rm.log, path + ("log",))
        cgroup, user = self._owner(rm, path)
        if len(self.p.items) > before:
            return None
        return Rule(
            name=rm.name, action=rm.action, direction=rm.direction, line=self.p.line_of(path),
            interfaces=interfaces, families=families, protos=protos, src=src, dst=dst,
            src_sets=src_sets, dst_sets=dst_sets,
            sport=sport, dport=dport, tcp_flags=tcp_flags, icmp=icmp, ct=ct, sets=tuple(used_sets), log=log,
            limit=limit, ban_for=ban_for, cgroup=cgroup, user=user,
        )

    def _owner(self, rm: RuleModel, path: yamlsrc.Path) -> tuple[str | None, int | None]:
        """`cgroup:` and `user:`: who sent the packet, known on egress only."""
        cgroup = user = None
        for key in ("cgroup", "user"):
            if getattr(rm, key) is not None and rm.direction != "egress":
                self.p.add(path + (key,), f"{key} needs an egress rule: only a packet a local "
                           "process sends has one")
        if rm.cgroup is not None and rm.direction == "egress":
            cgroup, err = owners.normalise_cgroup(rm.cgroup)
            if err:
                self.p.add(path + ("cgroup",), err)
                cgroup = None
        if rm.user is not None and rm.direction == "egress":
            user, err = owners.resolve_user(rm.user)
            if err:
                self.p.add(path + ("user",), err)
        return cgroup, user

    def _limit(self, value: Any, path: yamlsrc.Path) -> Limit | None:
        """`limit: 10/second`, or a mapping {rate, burst, per: source, bytes, over}."""
        if value is None:
            return None
        if not isinstance(value, dict):
            value = {"rate": value}
        try:
            lm = LimitModel.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                self.p.add(path + tuple(err["loc"]), _pydantic_message(err))
            return None
        count, period, err = parse_limit_rate(lm.rate)
        if err:
            self.p.add(path + ("rate",) if isinstance(value, dict) else path, err)
            return None
        burst = lm.burst if lm.burst is not None else (count if lm.bytes else LIMIT_BURST_DEFAULT)
        if not 1 <= burst < 1 << 32:
            self.p.add(path + ("burst",), f"burst {burst} is out of range (1-4294967295)")
            return None
        return Limit(count=count, period=period, burst=burst, per_source=lm.per == "source",
                     bytes=lm.bytes, over=lm.over)

    def _ban_for(self, rm: RuleModel, path: yamlsrc.Path) -> int | None:
        if rm.action != "ban":
            if rm.ban_for is not None:
                self.p.add(path + ("ban_for",), "ban_for needs action: ban")
            return None
        if rm.direction == "egress":
            self.p.add(path + ("action",), "action ban needs an ingress rule: it bans the packet's source")
        if rm.ban_for is None:
            return BAN_FOR_DEFAULT
        secs, err = parse_duration(rm.ban_for)
        if err:
            self.p.add(path + ("ban_for",), err)
        return secs

    def _log(self, value: Any, path: yamlsrc.Path) -> float | None:
        """Records a second: `log: true` is the default limit, `log: 5/second` or `30/minute` a limit."""
        if value is None or value is False:
            return None
        if value is True:
            return float(LOG_DEFAULT_PER_SECOND)
        rate, err = parse_rate(value)
        if err:
            self.p.add(path, f"{err} (or true for {LOG_DEFAULT_PER_SECOND}/second)")
            return None
        return rate

    def _ct(self, value: Any, path: yamlsrc.Path) -> frozenset[int] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out = set()
        for item in items:
            if isinstance(item, str) and item.lower() in shared.CT_STATES:
                out.add(shared.CT_STATES[item.lower()])
            else:
                self.p.add(path, f"unknown connection state {item!r} (known: {', '.join(shared.CT_STATES)})")
        if not items:
            self.p.add(path, "empty list")
        return frozenset(out)

    def _names(self, value: Any, path: yamlsrc.Path) -> list[str]:
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if not isinstance(item, str) or not IFACE_NAME.match(item):
                self.p.add(path, f"{item!r} is not an interface name")
            else:
                out.append(item)
        if not items:
            self.p.add(path, "empty list")
        return out

    def _addresses(self, value: Any, path: yamlsrc.Path,
                   used: list[str]) -> tuple[tuple[Network, ...] | None, tuple[str, ...]]:
        """The literal prefixes of an address condition and the sets it names.

        (None, ()) for no condition; literals () with sets named means only the sets."""
        if value is None:
            return None, ()
        items = value if isinstance(value, list) else [value]
        if not items:
            self.p.add(path, "empty list: leave the key out to match any address")
            return None, ()
        out: list[Network] = []
        refs: list[str] = []
        for j, item in enumerate(items):
            where = path + (j,) if isinstance(value, list) else path
            if isinstance(item, str) and item.startswith("@"):
                name = item[1:]
                if name in self.cidr_sets:
                    if name not in refs:
                        refs.append(name)
                    used.append(name)
                elif name in self.port_sets:
                    self.p.add(where, f"set '{name}' holds ports, not addresses")
                else:
                    self.p.add(where, f"unknown set '{name}'")
                continue
            net, err = parse_cidr(item)
            if err:
                self.p.add(where, err)
            else:
                out.append(net)
        return tuple(out), tuple(sorted(refs))

    def _protos(self, value: Any, path: yamlsrc.Path) -> frozenset[int] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out = set()
        for item in items:
            if isinstance(item, bool):
                self.p.add(path, f"{item!r} is not a protocol")
            elif isinstance(item, int):
                if 0 <= item <= 255:
                    out.add(item)
                else:
                    self.p.add(path, f"protocol number {item} is out of range (0-255)")
            elif isinstance(item, str) and names.protocol_number(item) is not None:
                out.add(names.protocol_number(item))
            else:
                self.p.add(path, f"unknown protocol {item!r} (known: "
                           f"{', '.join(names.PROTOCOLS)}, the names in /etc/protocols, or a number)")
        if not items:
            self.p.add(path, "empty list")
        return frozenset(out)

    def _ports(self, value: Any, path: yamlsrc.Path, protos: frozenset[int] | None,
               used: list[str]) -> tuple[PortRange, ...] | None:
        if value is None:
            return None
        if not protos or not protos <= names.PORT_PROTOCOLS:
            self.p.add(path, "ports need proto tcp, udp or sctp (and only those)")
        items = value if isinstance(value, list) else [value]
        if not items:
            self.p.add(path, "empty list: leave the key out to match any port")
        out: list[PortRange] = []
        for j, item in enumerate(items):
            where = path + (j,) if isinstance(value, list) else path
            if isinstance(item, str) and item.startswith("@"):
                name = item[1:]
                if name in self.port_sets:
                    out.extend(self.port_sets[name])
                    used.append(name)
                elif name in self.cidr_sets:
                    self.p.add(where, f"set '{name}' holds addresses, not ports")
                else:
                    self.p.add(where, f"unknown set '{name}'")
                continue
            rng, err = parse_port_range(item, tuple(sorted(protos or ())))
            if err:
                self.p.add(where, err)
            else:
                out.append(rng)
        return tuple(out)

    def _tcp_flags(self, value: str | None, path: yamlsrc.Path,
                   protos: frozenset[int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        if protos != frozenset({names.TCP}):
            self.p.add(path, "tcp_flags needs proto tcp (and only tcp)")
        mask = val = 0
        for part in value.split(","):
            part = part.strip().lower()
            negate = part.startswith("!")
            flag = part.lstrip("!").strip()
            if flag not in names.TCP_FLAGS:
                self.p.add(path, f"unknown TCP flag {flag!r} (known: {', '.join(names.TCP_FLAGS)})")
                continue
            bit = names.TCP_FLAGS[flag]
            if mask & bit and bool(val & bit) == negate:
                self.p.add(path, f"flag {flag} is both required and forbidden")
            mask |= bit
            if not negate:
                val |= bit
        return mask, val

    def _icmp(self, rm: RuleModel, path: yamlsrc.Path, protos: frozenset[int] | None,
              families: frozenset[int] | None) -> tuple[IcmpMatch, ...] | None:
        if rm.icmp_type is None and rm.icmp_code is None:
            return None
        icmp_fams = {names.ICMP: 4, names.ICMPV6: 6}
        if not protos or not protos <= set(icmp_fams):
            key = "icmp_type" if rm.icmp_type is not None else "icmp_code"
            self.p.add(path + (key,), "needs proto icmp or icmpv6 (and only those)")
            return None
        fams = [icmp_fams[p] for p in sorted(protos) if families is None or icmp_fams[p] in families]
        if not fams:
            self.p.add(path + ("family",), "family excludes every ICMP protocol of the rule")
            return None
        type_tables = {4: names.ICMP_TYPES, 6: names.ICMPV6_TYPES}
        code_tables = {4: names.ICMP_CODES, 6: names.ICMPV6_CODES}
        types = self._icmp_values(rm.icmp_type, path + ("icmp_type",), fams, type_tables, "type")
        codes = self._icmp_values(rm.icmp_code, path + ("icmp_code",), fams, code_tables, "code")
        out = []
        for f in fams:
            for t in types[f] if rm.icmp_type is not None else [None]:
                for c in codes[f] if rm.icmp_code is not None else [None]:
                    out.append(IcmpMatch(f, t, c))
        return tuple(out)

    def _icmp_values(self, value: Any, path: yamlsrc.Path, fams: list[int],
                     tables: dict[int, dict[str, int]], what: str) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {f: [] for f in fams}
        if value is None:
            return out
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                if not 0 <= item <= 255:
                    self.p.add(path, f"ICMP {what} {item} is out of range (0-255)")
                    continue
                for f in fams:
                    out[f].append(item)
                continue
            name = str(item).lower()
            found = [f for f in fams if name in tables[f]]
            if not found:
                known = sorted(set().union(*(tables[f] for f in fams)))
                self.p.add(path, f"unknown ICMP {what} {item!r} (known: {', '.join(known)}, or a number)")
            for f in found:
                out[f].append(tables[f][name])
        return out


def parse_cidr(value: Any) -> tuple[Network | None, str | None]:
    """An address or CIDR, IPv4 or IPv6; host bits must be clear."""
    if not isinstance(value, str):
        return None, f"{value!r} is not an address or CIDR"
    text = value.strip()
    try:
        return ipaddress.ip_network(text, strict=True), None
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None, f"'{value}' is not an address or CIDR"
    return None, f"'{value}' has host bits set (did you mean {loose}?)"


LOG_DEFAULT_PER_SECOND = 10
RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600}


def parse_rate(value: Any) -> tuple[float | None, str | None]:
    """Events a second from '10/second', '100/minute', '5/hour' (at most 1,000,000/second)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(second|minute|hour)\s*", value) if isinstance(value, str) else None
    if not m or int(m.group(1)) == 0:
        return None, f"{value!r} is not a rate such as 10/second or 100/minute"
    rate = int(m.group(1)) / RATE_UNITS[m.group(2)]
    if rate > 1_000_000:
        return None, f"{value!r} is more than 1000000/second"
    return rate, None


def parse_limit_rate(value: Any) -> tuple[int, int, str | None]:
    """(count, period in seconds) from '10/second', '100/minute', '5/hour'."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(second|minute|hour)\s*", value) if isinstance(value, str) else None
    if not m or not 1 <= int(m.group(1)) < 1 << 32:
        return 0, 0, f"{value!r} is not a rate such as 10/second or 100/minute"
    return int(m.group(1)), RATE_UNITS[m.group(2)], None


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> tuple[int | None, str | None]:
    """Seconds from 30, '30s', '10m', '1h', '5d' (at least 1 s, at most 2^32-1 s)."""
    if isinstance(value, int) and not isinstance(value, bool):
        secs = value
    elif isinstance(value, str) and re.fullmatch(r"\d+[smhd]", value.strip()):
        v = value.strip()
        secs = int(v[:-1]) * DURATION_UNITS[v[-1]]
    else:
        return None, f"{value!r} is not a duration (30, 30s, 10m, 1h, 5d)"
    if not 1 <= secs < 1 << 32:
        return None, f"duration {value} is out of range"
    return secs, None


def parse_port_range(value: Any, protos: tuple[int, ...] = ()) -> tuple[PortRange | None, str | None]:
    """A port (22), a range ('8000-8100'), as an int or a string, or a service name of the
    system's services table (ssh, https) for the protocols given (any port protocol if none)."""
    if isinstance(value, bool):
        return None, f"{value!r} is not a port"
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        parts = value.strip().split("-")
        if value.strip() and not set(value) <= set("0123456789- ") and len(value) <= 64:
            port, err = names.service_port(value, protos)
            return ((port, port), None) if port is not None else (None, err)
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            return None, f"'{value}' is not a port, a range lo-hi or a service name"
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        return None, f"{value!r} is not a port or a range lo-hi"
    for p in (lo, hi):
        if not 0 <= p <= 65535:
            return None, f"port {p} is out of range (0-65535)"
    if lo > hi:
        return None, f"range {value} is backwards"
    return (lo, hi), None
