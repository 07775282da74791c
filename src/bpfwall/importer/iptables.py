"""iptables-save and ip6tables-save output (the filter table) to bpfwall rules.

INPUT becomes ingress, OUTPUT egress; their policies the policies. Jumps to user chains
are inlined: the jumping rule's matches are added to each rule of the chain (a rule whose
matches contradict them is left out, as it could never match). What bpfwall cannot say
(negation, other tables, LOG, marks, most modules) is listed with the original line.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import Any

from ..names import protocol_number
from . import Imported, Unsupported

CHAINS = {"INPUT": "ingress", "OUTPUT": "egress"}
VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}
PROTOS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "icmp": "icmp", "ipv6-icmp": "icmpv6",
          "icmpv6": "icmpv6", "gre": "gre", "esp": "esp", "ah": "ah", "udplite": "udplite", "igmp": "igmp"}
CT_STATES = {"NEW": "new", "ESTABLISHED": "established", "RELATED": "related", "INVALID": "invalid"}
TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")
UNITS = {"second": "second", "sec": "second", "s": "second", "minute": "minute", "min": "minute",
         "m": "minute", "hour": "hour", "h": "hour"}
# Modules whose options are read below, or that only enable them.
KNOWN_MODULES = {"tcp", "udp", "sctp", "icmp", "icmp6", "conntrack", "state", "multiport", "limit", "set",
                 "comment"}
MAX_DEPTH = 16


def parse(texts: list[str], ipsets: dict[str, dict[str, Any]] | None = None) -> Imported:
    """Each text is one dump; an ip6tables-save dump gives IPv6 rules, any other IPv4.
    ValueError if a text is not iptables-save output at all."""
    imp = Imported("iptables-save")
    policies: dict[str, dict[str, str]] = {}  # direction -> family -> action
    for text in texts:
        lines = [line.strip() for line in text.splitlines()]
        if not any(line.startswith("*") for line in lines) or "COMMIT" not in lines:
            raise ValueError("not iptables-save output (no '*table' ... 'COMMIT' section)")
        family = "ipv6" if "ip6tables-save" in text.split("\n", 1)[0] else "ipv4"
        _Dump(text, family, imp, ipsets or {}, policies).run()
    _family_policies(imp, policies)
    return imp


def _family_policies(imp: Imported, policies: dict[str, dict[str, str]]) -> None:
    """bpfwall has one policy a direction for both families. Where the dumps' policies
    differ, the policy becomes drop and a last rule of that direction accepts the family
    whose policy was accept, so that each family keeps exactly its own policy. A dump of one
    family says what becomes of the other."""
    for direction, per in policies.items():
        chain = next(c for c, d in CHAINS.items() if d == direction)
        actions = set(per.values())
        if len(actions) == 1:
            imp.policy[direction] = actions.pop()
        else:
            imp.policy[direction] = "drop"
            for family, action in sorted(per.items()):
                if action == "accept":
                    where = {"direction": direction} if direction == "egress" else {}
                    imp.add_rule({**where, "family": family, "action": "accept"}, f"{chain.lower()}-policy-{family}")
        if len(per) == 1:
            (family, action), = per.items()
            other = "ipv6" if family == "ipv4" else "ipv4"
            imp.notes.append(f"only an {family} dump was given: {other} traffic meets the {chain} policy "
                             f"{action.upper()} of that dump and none of its rules (import the "
                             f"{'ip6tables-save' if other == 'ipv6' else 'iptables-save'} output too to carry "
                             f"{other}'s rules)")


def parse_ipset_save(text: str) -> dict[str, dict[str, Any]]:
    """`ipset save` output: name -> {type, family, elements}."""
    sets: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            family = words[words.index("family") + 1] if "family" in words else "inet"
            sets[words[1]] = {"type": words[2], "family": family, "elements": []}
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]]["elements"].append(words[2])
    return sets


class _Dump:
    def __init__(self, text: str, family: str, imp: Imported, ipsets: dict[str, dict[str, Any]],
                 policies: dict[str, dict[str, str]]) -> None:
        self.text = text
        self.family = family
        self.imp = imp
        self.ipsets = ipsets
        self.policies = policies
        self.chains: dict[str, list[tuple[str, list[str]]]] = {}  # chain -> [(line, words)]

    def run(self) -> None:
        table = None
        for line in self.text.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped == "COMMIT":
                continue
            if stripped.startswith("*"):
                table = stripped[1:]
                continue
            if table != "filter":
                if stripped.startswith(":"):
                    continue  # a chain of that table: its rules are listed, not its declaration
                self.imp.skip(f"[{table}] {stripped}", f"the {table} table: bpfwall filters, it does not "
                                                        "rewrite or mark packets")
                continue
            if stripped.startswith(":"):
                self._chain(stripped)
                continue
            try:
                words = shlex.split(stripped)
            except ValueError as exc:
                self.imp.skip(stripped, f"cannot read it: {exc}")
                continue
            if len(words) < 2 or words[0] != "-A":
                self.imp.skip(stripped, "not a rule of iptables-save's form (-A CHAIN ...)")
                continue
            self.chains.setdefault(words[1], []).append((stripped, words[2:]))
        for chain, direction in CHAINS.items():
            for index, (line, words) in enumerate(self.chains.get(chain, [])):
                self._emit(line, words, direction, {}, f"{chain.lower()}-{index + 1}", 0, [chain])
        for chain in self.chains:
            if chain == "FORWARD":
                for line, _ in self.chains[chain]:
                    self.imp.skip(line, "FORWARD: bpfwall filters the host's own traffic, not routed traffic")

    def _chain(self, line: str) -> None:
        words = line[1:].split()
        name, policy = words[0], words[1] if len(words) > 1 else "-"
        direction = CHAINS.get(name)
        if direction is None or policy == "-":
            return
        action = VERDICTS.get(policy)
        if action is None or action == "reject":
            self.imp.skip(line, f"policy {policy}")
            return
        self.policies.setdefault(direction, {})[self.family] = action

    def _emit(self, line: str, words: list[str], direction: str, inherited: dict[str, Any], hint: str,
              depth: int, path: list[str]) -> None:
        """Adds the rule of `words` (with matches inherited from the jumps that led here)."""
        try:
            match, target, comment = self._rule(words, direction)
            merged = _merge(inherited, match)
        except Unsupported as why:
            self.imp.skip(line, str(why))
            return
        if merged is None:
            return  # contradicts the jump that leads here: it can never match
        name = comment or hint
        if target in VERDICTS:
            self.imp.add_rule({**merged, "action": VERDICTS[target]}, name)
        elif target in ("LOG", "NFLOG", "COUNTER", None):
            self.imp.skip(line, f"-j {target}: does not decide the packet; bpfwall logs on a rule "
                                "that decides (log:)" if target else "no target: counts only")
        elif target == "RETURN":
            self.imp.skip(line, "RETURN with matches: bpfwall rules cannot say 'none of the rest'")
        elif target in self.chains:
            if depth >= MAX_DEPTH or target in path:
                self.imp.skip(line, f"jump to {target}: a loop, or nested too deep")
                return
            for index, (sub_line, sub_words) in enumerate(self.chains[target]):
                if sub_words[-2:] == ["-j", "RETURN"] and not any(w.startswith("-") for w in sub_words[:-2]):
                    break  # an unconditional RETURN: the rest of the chain is not reached from here
                self._emit(sub_line, sub_words, direction, merged, comment or f"{target.lower()}-{index + 1}",
                           depth + 1, [*path, target])
        else:
            self.imp.skip(line, f"-j {target}: not a verdict bpfwall has")

    def _rule(self, words: list[str], direction: str) -> tuple[dict[str, Any], str | None, str | None]:
        m: dict[str, Any] = {"direction": direction} if direction == "egress" else {}
        m["family"] = self.family
        target = comment = None
        limit: dict[str, Any] = {}
        i = 0
        while i < len(words):
            w = words[i]
            arg = words[i + 1] if i + 1 < len(words) else None
            if w == "!":
                raise Unsupported(f"negation ('! {arg}'): bpfwall rules have no 'not'")
            if arg is None and w not in ("--syn",):
                raise Unsupported(f"{w} without a value")
            if w in ("-s", "--source", "-d", "--destination"):
                m["src" if w in ("-s", "--source") else "dst"] = [_cidr(a) for a in arg.split(",")]
            elif w in ("-p", "--protocol"):
                if arg != "all":
                    m["proto"] = _proto(arg)
            elif w in ("-i", "--in-interface", "-o", "--out-interface"):
                if arg.endswith("+"):
                    raise Unsupported(f"interface wildcard {arg}")
                if (w in ("-o", "--out-interface")) != (direction == "egress"):
                    raise Unsupported(f"{w} {arg}: bpfwall names interfaces by where the packet is judged")
                m["interfaces"] = [arg]
            elif w == "-m":
                if arg not in KNOWN_MODULES:
                    raise Unsupported(f"-m {arg}: a module bpfwall has no match for")
            elif w in ("--dport", "--destination-port", "--sport", "--source-port"):
                m["dport" if "d" in w[2:4] else "sport"] = _port(arg)
            elif w in ("--dports", "--destination-ports", "--sports", "--source-ports"):
                m["dport" if "d" in w[2:4] else "sport"] = [_port(p) for p in arg.split(",")]
            elif w == "--tcp-flags":
                comp = words[i + 2] if i + 2 < len(words) else ""
                m["tcp_flags"] = _flags(arg, comp)
                i += 1
            elif w == "--syn":
                m["tcp_flags"] = _flags("FIN,SYN,RST,ACK", "SYN")
                i -= 1
            elif w in ("--ctstate", "--state"):
                m["ct"] = [_ct(s) for s in arg.split(",")]
            elif w in ("--icmp-type", "--icmpv6-type"):
                t, _, code = arg.partition("/")
                m["icmp_type"] = int(t) if t.isdigit() else t
                if code:
                    m["icmp_code"] = int(code)
            elif w == "--limit":
                n, _, unit = arg.partition("/")
                if unit not in UNITS or not n.isdigit():
                    raise Unsupported(f"--limit {arg}")
                limit["rate"] = f"{n}/{UNITS[unit]}"
            elif w == "--limit-burst":
                limit["burst"] = int(arg)
            elif w == "--match-set":
                flags = words[i + 2] if i + 2 < len(words) else ""
                if flags not in ("src", "dst"):
                    raise Unsupported(f"--match-set {arg} {flags}: only one address, src or dst")
                m[flags] = [f"@{self._ipset(arg)}"]
                i += 1
            elif w == "--comment":
                comment = arg
            elif w in ("-j", "--jump", "-g", "--goto"):
                target = arg
                if w in ("-g", "--goto") and arg in self.chains:
                    raise Unsupported(f"-g {arg}: goto (no return) has no bpfwall form")
            elif w == "--reject-with":
                pass  # bpfwall answers TCP with a RST and the rest with port unreachable
            else:
                raise Unsupported(f"{w}: an option bpfwall has no match for")
            i += 2
        if limit:
            if "rate" not in limit:
                limit["rate"] = "3/hour"  # iptables' default
            m["limit"] = limit if "burst" in limit else limit["rate"]
        return m, target, comment

    def _ipset(self, name: str) -> str:
        """The bpfwall set for an ipset reference, made from `ipset save` if given."""
        if name not in self.imp.sets:
            known = self.ipsets.get(name)
            if known is not None and not known["type"].startswith(("hash:ip", "hash:net")) or \
                    known is not None and "," in known["type"]:
                raise Unsupported(f"ipset {name} of type {known['type']}: only address sets carry over")
            elements = list(known["elements"]) if known else []
            if known is None:
                self.imp.notes.append(f"set {name} is empty: fill it from 'ipset save {name}' "
                                      f"(bpfwall set add {name} - < list), or import with --ipset FILE")
            self.imp.sets[name] = {"type": "cidr", "elements": elements}
        return name


def _merge(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any] | None:
    """Matches of a jump and of the rule it leads to, together; None if they contradict."""
    merged = dict(outer)
    for key, value in inner.items():
        if key in merged and merged[key] != value:
            if key in ("src", "dst", "dport", "sport", "ct", "proto", "interfaces", "family"):
                both = _intersect(key, merged[key], value)
                if both is None:
                    raise Unsupported(f"{key} given in a jump and again in the chain it jumps to")
                if not both:
                    return None
                merged[key] = both
                continue
            raise Unsupported(f"{key} given in a jump and again in the chain it jumps to")
        merged[key] = value
    return merged


def _intersect(key: str, a: Any, b: Any) -> list | str | None:
    """The values both allow, for the simple cases; None when it cannot say."""
    if key in ("ct", "interfaces"):
        return [x for x in a if x in b]
    if key in ("proto", "family"):
        return [] if a != b else a
    if key in ("dport", "sport"):
        if "@" in str(a) + str(b):
            return None
        ranges = [(max(x[0], y[0]), min(x[1], y[1])) for x in _ranges(a) for y in _ranges(b)]
        out = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in ranges if lo <= hi]
        return out[0] if len(out) == 1 else out
    if key in ("src", "dst"):
        if any(str(x).startswith("@") for x in [*a, *b]):
            return None
        nets_a = [ipaddress.ip_network(x) for x in a]
        nets_b = [ipaddress.ip_network(x) for x in b]
        out = []
        for x in nets_a:
            for y in nets_b:
                if x.version == y.version and (x.subnet_of(y) or y.subnet_of(x)):
                    out.append(str(x if x.prefixlen >= y.prefixlen else y))
        return out
    return None


def _ranges(ports: Any) -> list[tuple[int, int]]:
    """A port value of a rule (a port, "lo-hi", or a list of them) as ranges."""
    out = []
    for p in ports if isinstance(ports, list) else [ports]:
        lo, _, hi = str(p).partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise Unsupported(f"address {text}: not a CIDR (a non-contiguous mask?)") from None


def _proto(text: str) -> str | int:
    if text.isdigit():
        return int(text)
    if text.lower() in PROTOS:
        return PROTOS[text.lower()]
    if protocol_number(text) is not None:
        return text  # the rule file takes the system's protocol names too
    raise Unsupported(f"protocol {text}")


def _port(text: str) -> int | str:
    lo, sep, hi = text.partition(":")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise Unsupported(f"port {text}")
    return f"{lo}-{hi}" if sep else int(lo)


def _flags(mask: str, comp: str) -> str:
    names = {f.lower() for f in mask.split(",")}
    if "all" in names:
        names = set(TCP_FLAGS)
    on = {f.lower() for f in comp.split(",")} - {"none"}
    if "all" in on:
        on = set(TCP_FLAGS)
    if not names >= on or not names <= set(TCP_FLAGS):
        raise Unsupported(f"--tcp-flags {mask} {comp}")
    return ",".join([f for f in TCP_FLAGS if f in on] + [f"!{f}" for f in TCP_FLAGS if f in names - on])


def _ct(state: str) -> str:
    if state not in CT_STATES:
        raise Unsupported(f"connection state {state}")
    return CT_STATES[state]
