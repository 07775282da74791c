"""Ruleset -> the tables the data plane reads (bitvectors over value classes).

For each field the value space is split into classes whose values match the
same set of rules; each class gets one rule bitvector (bit i = rule i). A
packet's rule is the lowest bit of the AND of its classes' bitvectors. Equal
bitvectors share one class id across fields, so the bitvector table holds each
distinct rule set once.
"""

from __future__ import annotations

import ipaddress
from array import array
from dataclasses import dataclass, field

from . import owners, shared
from .ruleset import Network, Rule, Ruleset


@dataclass
class Compiled:
    """Everything a generation of the data plane is loaded with."""

    rules: list[Rule]
    config: shared.Config
    class_of: array  # CLASS_SLOTS u32: slot -> class id (unused fields left 0)
    bitvectors: list[int]  # class id -> rule bitset
    tries: dict[str, list[tuple[Network, int]]]  # src4/src6/dst4/dst6 -> (prefix, class id)
    dir_l1: array  # DIR_L1_SLOTS u32: src then dst, one per /16 (see _ipv4_tables)
    dir_chunks: array  # 256 u32 per chunk
    iface_classes: dict[str, int]  # interface name -> class id
    actions: list[int]
    n_words: int
    n_summary: int
    fields_used: set[int] = field(default_factory=set)
    direction: str = "ingress"
    ct_max_entries: int = shared.CT_MAX_ENTRIES_DEFAULT

    params: list[shared.RuleParam] = field(default_factory=list)  # rule_params, in order
    syn_ports: list[int] = field(default_factory=list)
    never_ban: list[Network] = field(default_factory=list)  # never_ban's literal prefixes
    hosts: dict[int, int] = field(default_factory=dict)  # the sets' single addresses per family
    cgroup_classes: dict[str, int] = field(default_factory=dict)  # named cgroup path -> class id
    user_classes: dict[int, int] = field(default_factory=dict)  # named uid -> class id

    def bans_by_rules(self) -> bool:
        return any(r.action == "ban" for r in self.rules)

    def log_states(self) -> list[shared.LogState]:
        """Per rule, its log limit as log_packet() reads it: a burst of a second's worth
        (at least one record), then the rate. GCRA admits a record while tat - now is at
        most burst_ns, so a burst of b records needs burst_ns = (b - 1) * interval."""
        out = []
        for r in self.rules:
            if r.log:
                interval = int(1e9 / r.log)
                out.append(shared.LogState(interval, interval * (max(1, int(r.log)) - 1), 0, 0))
            else:
                out.append(shared.LogState())
        return out

    @property
    def n_classes(self) -> int:
        return len(self.bitvectors)

    def bitvector_bytes(self) -> bytes:
        """Every class's bitvector as the data plane reads it: summary words, then words."""
        size = self.n_words * 8
        low_bits = _word_low_bits(self.n_words)
        out = bytearray()
        for bits in self.bitvectors:
            out += _summary(bits, low_bits, self.n_words).to_bytes(self.n_summary * 8, "little")
            out += bits.to_bytes(size, "little")
        return bytes(out)


def _word_low_bits(n_words: int) -> int:
    """Bit 0 of every 64-bit word: the mask _summary reads."""
    return int.from_bytes(b"\1\0\0\0\0\0\0\0" * n_words, "little")


_BIT_CHARS = bytes.maketrans(b"\0\1", b"01")


def _summary(bits: int, low_bits: int, n_words: int) -> int:
    """Bit w set when 64-bit word w of bits is not zero. OR-ing each bit with the 63 above
    it leaves word w's verdict in its bit 0; the bytes holding those bits, read as binary
    digits, are the summary. All in C: a Python loop over 10,000 classes' words took 0.3 s."""
    folded = bits
    for shift in (1, 2, 4, 8, 16, 32):
        folded |= folded >> shift
    flags = (folded & low_bits).to_bytes(n_words * 8, "little")[::8]  # 0 or 1 per word
    return int(flags[::-1].translate(_BIT_CHARS), 2)


class _Classes:
    """Interns rule bitsets into class ids.

    Keyed by the bitset's bytes, not the int: an int's hash is its value modulo
    2**61 - 1, so the bitsets of single rules (1 << i) fall on 61 hash values, and
    the dict compared long ints along those chains (20 us a lookup at 10,000 rules)."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.bitsets: list[int] = []

    def id_of(self, bits: int) -> int:
        key = bits.to_bytes((bits.bit_length() + 7) >> 3, "little")
        cid = self.ids.get(key)
        if cid is None:
            cid = self.ids[key] = len(self.bitsets)
            self.bitsets.append(bits)
        return cid


def compile_ruleset(ruleset: Ruleset, direction: str = "ingress") -> Compiled:
    rules = [r for r in ruleset.rules if r.direction == direction]
    if len(rules) > shared.MAX_RULES:
        raise ValueError(f"{len(rules)} rules: at most {shared.MAX_RULES} per direction")
    n = len(rules)
    classes = _Classes()
    class_of = array("I", bytes(4 * shared.CLASS_SLOTS))
    used: set[int] = set()

    def array_field(fid: int, base: int, slots: int, cond) -> None:
        """Fills class_of[base:base+slots] from each rule's intervals over the slots."""
        conds = [cond(r) for r in rules]
        if all(c is None for c in conds):
            return
        used.add(fid)
        intervals: list[tuple[int, int, int]] = []  # (lo, hi, rule)
        for i, c in enumerate(conds):
            if c is None:
                intervals.append((0, slots - 1, i))
            else:
                intervals.extend((lo, hi, i) for lo, hi in _merge(c))
        for lo, hi, cid in _sweep(intervals, slots, classes):
            class_of[base + lo : base + hi + 1] = array("I", [cid]) * (hi - lo + 1)

    array_field(shared.F_PROTO, shared.PROTO_BASE, shared.PROTO_SLOTS, _proto_intervals)
    array_field(shared.F_SPORT, shared.SPORT_BASE, shared.PORT_SLOTS, lambda r: r.sport)
    array_field(shared.F_DPORT, shared.DPORT_BASE, shared.PORT_SLOTS, lambda r: r.dport)
    array_field(shared.F_TCPFLAGS, shared.TCPFLAGS_BASE, shared.TCPFLAGS_SLOTS, _tcp_flag_intervals)
    array_field(shared.F_ICMP, shared.ICMP_BASE, shared.ICMP_SLOTS, _icmp_intervals)
    array_field(shared.F_CT, shared.CT_BASE, shared.CT_SLOTS,
                lambda r: None if r.ct is None else [(st, st) for st in r.ct])

    tries: dict[str, list[tuple[Network, int]]] = {}
    set_refs: dict[str, list[tuple[int, int]]] = {"src": [], "dst": []}
    for fid, key in ((shared.F_SRC, "src"), (shared.F_DST, "dst")):
        conds = [getattr(r, key) for r in rules]
        if all(c is None for c in conds):
            for fam in (4, 6):
                tries[f"{key}{fam}"] = []
            continue
        used.add(fid)
        wildcard = sum(1 << i for i, c in enumerate(conds) if c is None)
        for fam in (4, 6):
            tries[f"{key}{fam}"] = _address_classes(conds, fam, wildcard, classes)
        set_refs[key] = _set_refs(rules, key, ruleset.set_slots(), classes)

    iface_classes: dict[str, int] = {}
    iface_default = 0
    if any(r.interfaces is not None for r in rules):
        used.add(shared.F_IFACE)
        wildcard = sum(1 << i for i, r in enumerate(rules) if r.interfaces is None)
        iface_default = classes.id_of(wildcard)
        names = sorted({name for r in rules for name in (r.interfaces or ())})
        for name in names:
            bits = wildcard | sum(1 << i for i, r in enumerate(rules)
                                  if r.interfaces and name in r.interfaces)
            iface_classes[name] = classes.id_of(bits)

    cgroup_classes, cgroup_default = _cgroup_classes(rules, classes, used)
    user_classes, user_default = _user_classes(rules, classes, used)

    if not used:
        # With no field in use every AND would be all ones; the protocol field
        # (every rule matches every protocol) keeps the search to real rules.
        array_field(shared.F_PROTO, shared.PROTO_BASE, shared.PROTO_SLOTS,
                    lambda r: [(0, shared.PROTO_SLOTS - 1)])
        if not rules:
            used.add(shared.F_PROTO)
            class_of[0 : shared.PROTO_SLOTS] = array("I", [classes.id_of(0)]) * shared.PROTO_SLOTS

    n_words = max(1, (n + 63) // 64)
    n_summary = (n_words + 63) // 64
    actions = [shared.ACTIONS[r.action] for r in rules]
    params = []
    for i, r in enumerate(rules):
        if r.limit or r.action == "ban":
            params.append(rule_param(r, i))
            actions[i] |= len(params) << shared.PARAM_SHIFT
    cfg = shared.Config(
        fields=sum(1 << f for f in used),
        n_words=n_words,
        n_summary=n_summary,
        policy_ingress=shared.ACTIONS[ruleset.policy["ingress"]],
        policy_egress=shared.ACTIONS[ruleset.policy["egress"]],
        iface_default_class=iface_default,
        direction=shared.DIRECTIONS[direction],
        ct_enabled=ruleset.uses_ct(),
        n_src_sets=len(set_refs["src"]),
        n_dst_sets=len(set_refs["dst"]),
        log_enabled=any(r.log for r in rules),
        n_params=len(params),
        bans_enabled=direction == "ingress" and ruleset.bans_enabled(),
        cgroup_levels=sum({1 << owners.cgroup_level(p) for p in cgroup_classes}),
        cgroup_default_class=cgroup_default,
        user_default_class=user_default,
    )
    if judges_connections(cfg):
        for proto, unsure in enumerate(_unsure_at_connect(rules)):
            cfg.connect_unsure[proto] = classes.id_of(unsure)
    syn_ports: list[int] = []
    never_ban: list[Network] = []
    if direction == "ingress":
        _guard_config(cfg, ruleset.conntrack)
        syn_ports = list(ruleset.conntrack.get("syn_cookies", {}).get("ports", []))
        never_ban = _never_ban_config(cfg, ruleset)
    for key in ("src", "dst"):
        for j, (slot, cid) in enumerate(set_refs[key]):
            getattr(cfg, f"{key}_sets")[j] = shared.SetRef(slot, cid)
    if direction == "ingress":
        masks = _blocklist_masks(rules)
        cfg.n_blocklists = len(masks)
        for j, mask in enumerate(masks):
            cfg.blocklist_sets[j] = mask
    timeouts = {**shared.CT_TIMEOUT_DEFAULTS, **ruleset.conntrack.get("timeouts", {})}
    for name, _ in shared.CtTimeouts._fields_:
        setattr(cfg.ct_timeouts, name, timeouts[name])
    for bit, name in enumerate(shared.TRIES):
        entries = tries[name]
        if len(entries) == 1:  # only the /0 root: every address has its class
            cfg.trie_root_only |= 1 << bit
            cfg.root_class[bit] = entries[0][1]
    dir_l1, dir_chunks = _ipv4_tables([tries["src4"], tries["dst4"]])
    return Compiled(
        rules=rules, config=cfg, class_of=class_of, bitvectors=classes.bitsets, tries=tries,
        dir_l1=dir_l1, dir_chunks=dir_chunks,
        iface_classes=iface_classes, actions=actions, params=params, syn_ports=syn_ports, never_ban=never_ban,
        n_words=n_words, n_summary=n_summary, fields_used=used, direction=direction,
        # An LRU table is allocated whole: keep the unused one tiny.
        ct_max_entries=(ruleset.conntrack.get("max_entries", shared.CT_MAX_ENTRIES_DEFAULT)
                        if ruleset.uses_ct() else 64),
        hosts=_set_hosts(ruleset), cgroup_classes=cgroup_classes, user_classes=user_classes,
    )


def _cgroup_classes(rules: list[Rule], classes: _Classes, used: set[int]) -> tuple[dict[str, int], int]:
    """(named cgroup path -> class, the class of a socket under none of them). A rule
    matches its cgroup and every one below, so a named cgroup's class holds the rules
    naming it or a cgroup above it, and the data plane takes the deepest named one."""
    if all(r.cgroup is None for r in rules):
        return {}, 0
    used.add(shared.F_CGROUP)
    wildcard = sum(1 << i for i, r in enumerate(rules) if r.cgroup is None)
    out = {}
    for path in sorted({r.cgroup for r in rules if r.cgroup is not None}):
        bits = wildcard | sum(1 << i for i, r in enumerate(rules)
                              if r.cgroup is not None and owners.cgroup_covers(r.cgroup, path))
        out[path] = classes.id_of(bits)
    return out, classes.id_of(wildcard)


def _user_classes(rules: list[Rule], classes: _Classes, used: set[int]) -> tuple[dict[int, int], int]:
    """(named uid -> class, the class of any other uid and of a packet without a socket)."""
    if all(r.user is None for r in rules):
        return {}, 0
    used.add(shared.F_USER)
    wildcard = sum(1 << i for i, r in enumerate(rules) if r.user is None)
    out = {uid: classes.id_of(wildcard | sum(1 << i for i, r in enumerate(rules) if r.user == uid))
           for uid in sorted({r.user for r in rules if r.user is not None})}
    return out, classes.id_of(wildcard)


def judges_connections(cfg: shared.Config) -> bool:
    """Whether the rule set's connections are judged at connect() and sendmsg() too (see
    bpf/sockaddr.h): egress rules that name owners, which people write to keep programs
    from connecting."""
    return cfg.direction == shared.DIRECTIONS["egress"] and bool(
        cfg.fields & ((1 << shared.F_CGROUP) | (1 << shared.F_USER)))


def needs_packet(rule: Rule, proto: str) -> bool:
    """Whether a connection's meeting rule depends on more than connect() knows: its
    source address or port, its interface, its TCP flags, for UDP its connection state,
    or the traffic (a limit, a ban)."""
    return (rule.interfaces is not None or rule.src is not None or rule.sport is not None
            or rule.tcp_flags is not None or bool(rule.limit) or rule.action == "ban"
            or (proto == "udp" and rule.ct is not None))


def _unsure_at_connect(rules: list[Rule]) -> tuple[int, int]:
    """The rules connect() cannot be sure of (needs_packet), for TCP and for UDP
    (shared.AT_CONNECT_TCP, AT_CONNECT_UDP)."""
    return tuple(sum(1 << i for i, r in enumerate(rules) if needs_packet(r, proto))  # type: ignore[return-value]
                 for proto in ("tcp", "udp"))


def _set_hosts(ruleset: Ruleset) -> dict[int, int]:
    """How many elements of the CIDR sets go into the host tables, per family (every IPv4
    one, IPv6 single addresses): what those tables are sized for."""
    out = {4: 0, 6: 0}
    for cset in ruleset.cidr_sets.values():
        for family, _, plen in cset.elements:
            if family == 4 or plen == 128:
                out[family] += 1
    return out


NS = 1_000_000_000


def rule_param(rule: Rule, index: int) -> shared.RuleParam:
    """A rule's rule_params entry: limit_passes() charges each packet (or byte)
    period_ns / rate and admits it while the bucket runs at most tolerance_ns ahead."""
    p = shared.RuleParam(rule=index, ban_ns=(rule.ban_for or 0) * NS)
    if rule.limit:
        lim = rule.limit
        p.period_ns = lim.period * NS
        p.rate = lim.count
        p.tolerance_ns = lim.burst * p.period_ns // lim.count
        p.flags = (shared.LIMIT_ON | (shared.LIMIT_PER_SOURCE if lim.per_source else 0)
                   | (shared.LIMIT_BYTES if lim.bytes else 0) | (shared.LIMIT_OVER if lim.over else 0))
    return p


def _guard_config(cfg: shared.Config, conntrack: dict) -> None:
    """The ingress program's SYN-cookie and port-scan constants."""
    syn = conntrack.get("syn_cookies")
    if syn:
        cfg.syn_rate = syn["count"]
        cfg.syn_period_ns = syn["period"] * NS
        cfg.syn_tolerance_ns = syn["burst"] * cfg.syn_period_ns // syn["count"]
    scan = conntrack.get("port_scan")
    if scan:
        cfg.scan_ports = scan["ports"]
        cfg.scan_window_ns = scan["window"] * NS
        cfg.scan_ban_ns = scan["ban_for"] * NS
    budget = conntrack.get("reject_budget", shared.REJECT_BUDGET_DEFAULT)
    cfg.reject_cost_ns = budget["period"] * NS // budget["count"]
    cfg.reject_tolerance_ns = budget["burst"] * cfg.reject_cost_ns
    cfg.reject_source_cost_ns = budget["source_period"] * NS // budget["source_count"]
    cfg.reject_source_tolerance_ns = budget["source_burst"] * cfg.reject_source_cost_ns


def _never_ban_config(cfg: shared.Config, ruleset: Ruleset) -> list[Network]:
    """never_ban's sets by slot into cfg; its literal prefixes, for the never_ban trie."""
    slots = ruleset.set_slots()
    names = [n for n in ruleset.never_ban_sets() if n in slots]
    cfg.n_never_ban_sets = len(names)
    for j, name in enumerate(names):
        cfg.never_ban_slots[j] = slots[name]
    prefixes = ruleset.never_ban_prefixes()
    cfg.never_ban_literals = bool(prefixes)
    return prefixes


def _merge(intervals) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _sweep(intervals: list[tuple[int, int, int]], slots: int, classes: _Classes):
    """Yields (lo, hi, class id) segments covering [0, slots) from per-rule intervals."""
    events: dict[int, list[tuple[int, int]]] = {}
    for lo, hi, rule in intervals:
        events.setdefault(lo, []).append((1, rule))
        events.setdefault(hi + 1, []).append((-1, rule))
    points = sorted(p for p in events if p < slots)
    if not points or points[0] != 0:
        points.insert(0, 0)
    bits = 0
    for k, pos in enumerate(points):
        for delta, rule in events.get(pos, ()):
            if delta > 0:
                bits |= 1 << rule
            else:
                bits &= ~(1 << rule)
        end = points[k + 1] - 1 if k + 1 < len(points) else slots - 1
        yield pos, end, classes.id_of(bits)


def _proto_intervals(r: Rule):
    pairs = r.proto_slots()
    if pairs is None:
        return None
    return [((1 if fam == 6 else 0) * 256 + p,) * 2 for fam, p in pairs]


def _tcp_flag_intervals(r: Rule):
    if r.tcp_flags is None:
        return None
    mask, value = r.tcp_flags
    return [(f, f) for f in range(256) if f & mask == value]


def _icmp_intervals(r: Rule):
    if r.icmp is None:
        return None
    out = []
    for m in r.icmp:
        fam = (1 if m.family == 6 else 0) << 16
        types = [m.type] if m.type is not None else range(256)
        for t in types:
            if m.code is None:
                out.append((fam | t << 8, fam | t << 8 | 0xFF))
            else:
                out.append(((fam | t << 8 | m.code),) * 2)
    return out


def _ipv4_tables(fields: list[list[tuple[Network, int]]]) -> tuple[array, array]:
    """IPv4 longest-prefix match as up to three array reads (DIR-16-8-8) instead of a trie walk.

    Per field, 65,536 entries, one per /16: a class, or DIR_CHUNK | n for
    chunk n of 256 entries (one per /24 of that /16), whose entries are again
    a class or a chunk of 256 (one per address). Prefixes are painted
    shortest first, so a longer prefix overwrites exactly the addresses it
    holds; a chunk starts as copies of the entry it replaces.
    """
    l1 = array("I", bytes(4 * shared.DIR_L1_SLOTS))
    chunks = array("I")

    def chunk_of(table: array, index: int) -> int:
        value = table[index]
        if value & shared.DIR_CHUNK:
            return value & ~shared.DIR_CHUNK
        n = len(chunks) // 256
        if n >= shared.DIR_MAX_CHUNKS:
            raise ValueError(f"the IPv4 prefixes of the rules need more than {shared.DIR_MAX_CHUNKS} tables")
        chunks.extend(array("I", [value]) * 256)
        table[index] = shared.DIR_CHUNK | n
        return n

    for f, entries in enumerate(fields):
        base = f * 65536
        if not entries:
            continue
        for net, cid in sorted(entries, key=lambda e: e[0].prefixlen):
            start, plen = int(net.network_address), net.prefixlen
            if plen <= 16:
                lo = base + (start >> 16)
                l1[lo : lo + (1 << (16 - plen))] = array("I", [cid]) * (1 << (16 - plen))
                continue
            c2 = chunk_of(l1, base + (start >> 16))
            if plen <= 24:
                lo = c2 * 256 + ((start >> 8) & 255)
                chunks[lo : lo + (1 << (24 - plen))] = array("I", [cid]) * (1 << (24 - plen))
                continue
            c3 = chunk_of(chunks, c2 * 256 + ((start >> 8) & 255))
            lo = c3 * 256 + (start & 255)
            chunks[lo : lo + (1 << (32 - plen))] = array("I", [cid]) * (1 << (32 - plen))
    return l1, chunks


def ipv4_class(c: Compiled, field: int, addr: int) -> int:
    """The class the DIR tables give an IPv4 address (field 0 src, 1 dst), as the data plane reads them."""
    value = c.dir_l1[field * 65536 + (addr >> 16)]
    for shift in (8, 0):
        if not value & shared.DIR_CHUNK:
            return value
        value = c.dir_chunks[(value & ~shared.DIR_CHUNK) * 256 + ((addr >> shift) & 255)]
    return value


def drops_by_source_set(r: Rule) -> bool:
    """Whether rule r drops a packet for its source's sets alone: nothing else about the
    packet (nor its connection state, a limit or a log) can change what r does with it."""
    return (r.action == "drop" and bool(r.src_sets) and not r.src and not r.dst_sets
            and r.log is None and r.limit is None
            and all(getattr(r, key) is None for key in (
                "interfaces", "families", "protos", "dst", "sport", "dport", "tcp_flags", "icmp", "ct")))


def _blocklist_masks(rules: list[Rule]) -> list[int]:
    """The leading rules that drop by source set alone, each as a mask of its sets over
    the src set references (sorted names, as _set_refs orders them). The data plane
    searches these sets first and drops a match without looking further."""
    names = sorted({name for r in rules for name in r.src_sets})
    masks = []
    for r in rules[:shared.MAX_FIELD_SETS]:
        if not drops_by_source_set(r):
            break
        masks.append(sum(1 << names.index(name) for name in r.src_sets))
    return masks


def _set_refs(rules: list[Rule], key: str, slots: dict[str, int],
              classes: _Classes) -> list[tuple[int, int]]:
    """(slot, class) of every CIDR set the rules name in field key: the class
    holds the rules that name the set there."""
    names = sorted({name for r in rules for name in getattr(r, f"{key}_sets")})
    if len(names) > shared.MAX_FIELD_SETS:
        raise ValueError(f"the {rules[0].direction} rules name {len(names)} sets in {key}: "
                         f"at most {shared.MAX_FIELD_SETS}")
    return [(slots[name], classes.id_of(sum(1 << i for i, r in enumerate(rules)
                                            if name in getattr(r, f"{key}_sets"))))
            for name in names]


def _address_classes(conds, family: int, wildcard: int, classes: _Classes):
    """Prefixes of one family with the class of every address whose longest match they are.

    An address's rules are those of every prefix that contains it, and those
    prefixes are exactly the ancestors of its longest match. Walking prefixes in
    address order with a stack of open ancestors gives each its parent in one pass.
    """
    own: dict[tuple[int, int], int] = {}
    net_of: dict[tuple[int, int], Network] = {}  # the rules' own objects: making 10,000 anew costs 0.1 s
    for i, nets in enumerate(conds):
        if nets is None:
            continue
        for net in nets:
            if net.version == family:
                key = (int(net.network_address), net.prefixlen)
                own[key] = own.get(key, 0) | (1 << i)
                net_of.setdefault(key, net)
    bits_total = 32 if family == 4 else 128
    root_bits = wildcard | own.pop((0, 0), 0)
    root: Network = ipaddress.IPv4Network((0, 0)) if family == 4 else ipaddress.IPv6Network((0, 0))
    out: list[tuple[Network, int]] = [(root, classes.id_of(root_bits))]
    stack: list[tuple[int, int, int]] = []  # (start, end, bits)
    for (start, plen) in sorted(own):
        end = start + (1 << (bits_total - plen)) - 1
        while stack and stack[-1][1] < start:
            stack.pop()
        parent = stack[-1][2] if stack else root_bits
        bits = parent | own[(start, plen)]
        stack.append((start, end, bits))
        out.append((net_of[(start, plen)], classes.id_of(bits)))
    return out
