"""`nft -j list ruleset` to bpfwall rules.

The filter base chain on the input hook becomes ingress, the one on output egress, with
their policies. Jumps to regular chains are inlined (the jumping rule's matches added to
each rule of the chain). Named address and port sets become bpfwall sets. What bpfwall
cannot say (negation, other hooks, marks, maps, meters...) is listed with its JSON.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from . import Imported, Unsupported
from .iptables import MAX_DEPTH, _merge

HOOKS = {"input": "ingress", "output": "egress"}
VERDICTS = {"accept": "accept", "drop": "drop", "reject": "reject"}
FAMILIES = {"ip": "ipv4", "ip6": "ipv6"}
PORT_PROTOS = {"tcp", "udp", "sctp"}
ICMP_PROTOS = {"icmp": "icmp", "icmpv6": "icmpv6"}
IGNORED = {"counter", "comment"}


def parse(text: str) -> Imported:
    try:
        items = json.loads(text)["nftables"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TypeError("'nftables' is not a list of objects")
        return _Ruleset(items).run()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not the output of 'nft -j list ruleset': {exc}") from None


class _Ruleset:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.imp = Imported("nft -j list ruleset")
        self.chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.sets: dict[tuple[str, str, str], dict[str, Any]] = {}
        for item in items:
            for kind, body in item.items():
                if kind in ("chain", "rule", "set"):
                    key = (body["family"], body["table"], body.get("chain") if kind == "rule" else body["name"])
                    if kind == "chain":
                        self.chains[key] = body
                    elif kind == "rule":
                        self.rules.setdefault(key, []).append(body)
                    else:
                        self.sets[key] = body

    def run(self) -> Imported:
        used: dict[str, tuple[str, str, str]] = {}
        for key, chain in sorted(self.chains.items(), key=lambda kv: kv[1].get("prio", 0)):
            direction = HOOKS.get(chain.get("hook", ""))
            if chain.get("type") != "filter" or direction is None or key[0] not in ("ip", "ip6", "inet"):
                if chain.get("hook"):
                    for rule in self.rules.get(key, []):
                        self.imp.skip(_show(rule), f"chain {key[2]} on hook {chain.get('hook')} of family "
                                                   f"{key[0]}: only input and output filter chains carry over")
                continue
            if direction in used:
                for rule in self.rules.get(key, []):
                    self.imp.skip(_show(rule), f"a second {chain['hook']} chain ({key[1]} {key[2]}): nftables "
                                               "runs both, bpfwall has one rule list a direction")
                continue
            used[direction] = key
            policy = chain.get("policy", "accept")
            if policy in ("accept", "drop"):
                self.imp.policy[direction] = policy
            family = FAMILIES.get(key[0])
            inherited = {"family": family} if family else {}
            if direction == "egress":
                inherited["direction"] = "egress"
            for index, rule in enumerate(self.rules.get(key, [])):
                self._emit(rule, inherited, f"{key[2]}-{index + 1}", 0, [key])
        return self.imp

    def _emit(self, rule: dict[str, Any], inherited: dict[str, Any], hint: str, depth: int,
              path: list[tuple[str, str, str]]) -> None:
        try:
            match, verdict, log = self._exprs(rule, inherited.get("direction", "ingress"))
            merged = _merge(inherited, match)
        except Unsupported as why:
            self.imp.skip(_show(rule), str(why))
            return
        if merged is None:
            return
        name = rule.get("comment") or hint
        if verdict is None:
            if log:
                self.imp.skip(_show(rule), "log without a verdict: bpfwall logs on the rule that decides")
            return  # counters and comments alone decide nothing
        kind, target = verdict
        if kind in VERDICTS:
            out = {**merged, "action": VERDICTS[kind]}
            if log:
                out["log"] = True
            self.imp.add_rule(out, name)
        elif kind == "jump":
            key = (rule["family"], rule["table"], target)
            if key not in self.chains or depth >= MAX_DEPTH or key in path:
                self.imp.skip(_show(rule), f"jump to {target}: unknown, a loop, or nested too deep")
                return
            for index, sub in enumerate(self.rules.get(key, [])):
                exprs = sub.get("expr", [])
                if exprs and all(_is_return(e) or next(iter(e)) in IGNORED for e in exprs) \
                        and any(_is_return(e) for e in exprs):
                    break  # an unconditional return: the rest is not reached from here
                self._emit(sub, merged, rule.get("comment") or f"{target}-{index + 1}", depth + 1, [*path, key])
        else:
            self.imp.skip(_show(rule), f"{kind}: no bpfwall form"
                          + (" (with matches, 'none of the rest' cannot be said)" if kind == "return" else ""))

    def _exprs(self, rule: dict[str, Any], direction: str) -> tuple[dict[str, Any], tuple | None, bool]:
        m: dict[str, Any] = {}
        verdict = None
        log = False
        for expr in rule.get("expr", []):
            (kind, body), = expr.items()
            if kind == "match":
                self._match(body, m, rule, direction)
            elif kind in VERDICTS:
                verdict = (kind, None)
            elif kind in ("jump", "goto"):
                if kind == "goto":
                    raise Unsupported("goto (no return) has no bpfwall form")
                verdict = ("jump", body["target"])
            elif kind == "return":
                verdict = ("return", None)
            elif kind == "log":
                log = True
            elif kind == "limit":
                m["limit"] = _limit(body)
            elif kind in IGNORED:
                continue
            else:
                raise Unsupported(f"'{kind}' statement")
        return m, verdict, log

    def _match(self, body: dict[str, Any], m: dict[str, Any], rule: dict[str, Any], direction: str) -> None:
        op, left, right = body.get("op", "=="), body["left"], body["right"]
        if op not in ("==", "in"):
            raise Unsupported(f"operator '{op}': bpfwall rules have no 'not' or comparisons")
        if isinstance(left, dict) and "&" in left:  # tcp flags & mask == value
            inner, mask = left["&"]
            if _payload(inner) != ("tcp", "flags"):
                raise Unsupported("a bitwise match other than TCP flags")
            mask_set = set(_names(mask))
            on = set(_names(right))
            if not on <= mask_set:
                raise Unsupported("TCP flags set outside their mask")
            m["tcp_flags"] = ",".join(sorted(on) + [f"!{f}" for f in sorted(mask_set - on)])
            _need_proto(m, "tcp")
            return
        if op == "in" and _payload(left) == ("tcp", "flags"):  # tcp flags syn: any of them set
            flags = _names(right)
            if len(flags) != 1:
                raise Unsupported("'any of these TCP flags': bpfwall asks for flags set, all of them")
            m["tcp_flags"] = flags[0]
            _need_proto(m, "tcp")
            return
        payload = _payload(left)
        meta = left.get("meta", {}).get("key") if isinstance(left, dict) else None
        ct = left.get("ct", {}).get("key") if isinstance(left, dict) else None
        if payload:
            proto, fld = payload
            if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
                m["family"] = FAMILIES[proto]
                m["src" if fld == "saddr" else "dst"] = self._addresses(right, rule)
            elif proto in ("ip", "ip6") and fld in ("protocol", "nexthdr"):
                m["proto"] = _protos(right)
            elif proto in PORT_PROTOS | {"th"} and fld in ("sport", "dport"):
                if proto != "th":
                    _need_proto(m, proto)
                m[fld] = self._ports(right, rule)
            elif proto in ICMP_PROTOS and fld in ("type", "code"):
                _need_proto(m, ICMP_PROTOS[proto])
                m["icmp_type" if fld == "type" else "icmp_code"] = _values(right)
            else:
                raise Unsupported(f"{proto} {fld}")
        elif meta == "l4proto":
            m["proto"] = _protos(right)
        elif meta == "nfproto":
            m["family"] = {"ipv4": "ipv4", "ipv6": "ipv6"}.get(right) or _raise(f"nfproto {right}")
        elif meta in ("iifname", "iif", "oifname", "oif"):
            if (meta.startswith("o")) != (direction == "egress"):
                raise Unsupported(f"meta {meta}: bpfwall names interfaces by where the packet is judged")
            names = _values(right)
            names = names if isinstance(names, list) else [names]
            if any(not isinstance(n, str) or n.endswith("*") for n in names):
                raise Unsupported(f"meta {meta} {right}")
            m["interfaces"] = names
        elif ct == "state":
            states = right if isinstance(right, list) else [right]
            if any(s not in ("new", "established", "related", "invalid") for s in states):
                raise Unsupported(f"ct state {right}")
            m["ct"] = list(states)
        else:
            raise Unsupported(f"match on {json.dumps(left)}")

    def _addresses(self, right: Any, rule: dict[str, Any]) -> list[str]:
        if isinstance(right, str) and right.startswith("@"):
            return [f"@{self._set(right[1:], rule, 'cidr')}"]
        values = right["set"] if isinstance(right, dict) and "set" in right else [right]
        out: list[str] = []
        for v in values:
            out += _cidrs(v)
        return out

    def _ports(self, right: Any, rule: dict[str, Any]) -> Any:
        if isinstance(right, str) and right.startswith("@"):
            return f"@{self._set(right[1:], rule, 'port')}"
        values = right["set"] if isinstance(right, dict) and "set" in right else [right]
        out = [_port(v) for v in values]
        return out[0] if len(out) == 1 else out

    def _set(self, name: str, rule: dict[str, Any], kind: str) -> str:
        body = self.sets.get((rule["family"], rule["table"], name))
        if body is None:
            raise Unsupported(f"set @{name} is not in the dump")
        if name not in self.imp.sets:
            t = body.get("type")
            if kind == "cidr" and t in ("ipv4_addr", "ipv6_addr"):
                elements: list[Any] = []
                for e in body.get("elem", []):
                    elements += _cidrs(e.get("elem", {}).get("val", e) if isinstance(e, dict) and "elem" in e else e)
            elif kind == "port" and t == "inet_service":
                elements = [_port(e) for e in body.get("elem", [])]
            else:
                raise Unsupported(f"set @{name} of type {t}")
            self.imp.sets[name] = {"type": kind, "elements": elements}
        elif self.imp.sets[name]["type"] != kind:
            raise Unsupported(f"set @{name} used as addresses and as ports")
        return name


def _raise(message: str) -> Any:
    raise Unsupported(message)


def _is_return(expr: dict[str, Any]) -> bool:
    return "return" in expr


def _payload(left: Any) -> tuple[str, str] | None:
    if isinstance(left, dict) and "payload" in left and "protocol" in left["payload"]:
        return left["payload"]["protocol"], left["payload"]["field"]
    return None


def _need_proto(m: dict[str, Any], proto: str) -> None:
    have = m.get("proto")
    if have is None:
        m["proto"] = proto
    elif have != proto and not (isinstance(have, list) and proto in have):
        raise Unsupported(f"{proto} fields in a rule for protocol {have}")
    elif isinstance(have, list):
        m["proto"] = proto


def _names(value: Any) -> list[str]:
    if isinstance(value, dict) and "set" in value:
        value = value["set"]
    return list(value) if isinstance(value, list) else [value]


def _values(right: Any) -> Any:
    if isinstance(right, dict) and "set" in right:
        return [v for v in right["set"]]
    if isinstance(right, dict):
        raise Unsupported(f"value {json.dumps(right)}")
    return right


def _protos(right: Any) -> Any:
    v = _values(right)
    return v


def _cidrs(value: Any) -> list[str]:
    try:
        if isinstance(value, str):
            return [str(ipaddress.ip_network(value))]
        if isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            return [str(ipaddress.ip_network(f"{p['addr']}/{p['len']}"))]
        if isinstance(value, dict) and "range" in value:
            lo, hi = (ipaddress.ip_address(x) for x in value["range"])
            return [str(n) for n in ipaddress.summarize_address_range(lo, hi)]
    except (ValueError, TypeError, KeyError):
        pass
    raise Unsupported(f"address {json.dumps(value)}")


def _port(value: Any) -> int | str:
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        return f"{lo}-{hi}"
    raise Unsupported(f"port {json.dumps(value)}")


def _limit(body: dict[str, Any]) -> Any:
    if body.get("rate_unit", "packets") != "packets" or body.get("per") not in ("second", "minute", "hour"):
        raise Unsupported(f"limit {json.dumps(body)}")
    out: dict[str, Any] = {"rate": f"{body['rate']}/{body['per']}"}
    if body.get("burst"):
        out["burst"] = body["burst"]
    if body.get("inv"):
        out["over"] = True
    return out if len(out) > 1 else out["rate"]


def _show(rule: dict[str, Any]) -> str:
    """A rule as a reader recognises it: chain, then its expressions as JSON."""
    return f"{rule.get('chain')}: " + json.dumps(rule.get("expr", []), separators=(",", ":"))
