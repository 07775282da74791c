"""The bench's headline figures: bpfwall against each peer on its own ground, as ratios
measured in the same run, each beside the target it is held to."""

from __future__ import annotations


def _row(rows: list[dict] | None, variant: str, **match) -> dict | None:
    return next((r for r in rows or [] if r.get("variant") == variant and "skipped" not in r
                 and all(r.get(k) == v for k, v in match.items())), None)


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if a is None or b is None or a.get(key) is None or not b.get(key):
        return None
    return a[key] / b[key]


def _over_floor(a: dict | None, b: dict | None, rows: list[dict] | None, key: str, **match) -> float | None:
    """a's cost beyond the trivial XDP_DROP's in the same flood, over b's: what the
    firewalls themselves add to the receive path that every packet pays anyway."""
    floor = _row(rows, "xdp-drop", **match)
    if None in (a, b, floor) or b[key] - floor[key] <= 0:
        return None
    return (a[key] - floor[key]) / (b[key] - floor[key])


def headline(results: dict) -> list[dict]:
    """[{figure, value (None: not measured), target, better ("lower"|"higher"), met}]."""
    flood = results.get("flood", {})
    blocklist = flood.get("blocklist", {})
    hosts = blocklist.get("hosts", {})
    rules = flood.get("rows")
    most = max((r["rules"] for r in rules or [] if "rules" in r), default=None)
    stream = results.get("stream", {}).get("rows")
    memory = results.get("memory", {}).get("kernel_bytes", {})
    size = blocklist.get("size")
    figures = [
        (f"{hosts.get('size', 10_000):,}-address flood: bpfwall / xdp-filter, program ns per packet",
         _ratio(_row(hosts.get("rows"), "bpfwall"), _row(hosts.get("rows"), "xdp-filter"), "prog_ns"), 1.0, "lower"),
        (f"{size or 1_000_000:,}-element blocklist flood: bpfwall / reference program, program ns per packet",
         _ratio(_row(blocklist.get("rows"), "bpfwall"), _row(blocklist.get("rows"), "reference"), "prog_ns"),
         1.15, "lower"),
        (f"{size or 1_000_000:,}-element blocklist flood: bpfwall / ipset hash:net, softirq CPU per packet",
         _ratio(_row(blocklist.get("rows"), "bpfwall"), _row(blocklist.get("rows"), "iptables-ipset"),
                "softirq_ns"), 0.2, "lower"),
        ("  the same, each beyond the trivial XDP_DROP's receive path",
         _over_floor(_row(blocklist.get("rows"), "bpfwall"), _row(blocklist.get("rows"), "iptables-ipset"),
                     blocklist.get("rows"), "softirq_ns"), 0.2, "lower"),
        (f"{most or 1000:,} service rules: bpfwall / nftables netdev map, softirq CPU per packet",
         _ratio(_row(rules, "bpfwall", rules=most), _row(rules, "nft-netdev", rules=most), "softirq_ns"),
         0.35, "lower"),
        ("  the same, each beyond the trivial XDP_DROP's receive path",
         _over_floor(_row(rules, "bpfwall", rules=most), _row(rules, "nft-netdev", rules=most), rules, "softirq_ns",
                     rules=most), 0.35, "lower"),
        ("TCP stream (iperf3): bpfwall / no-op XDP_PASS, throughput",
         _ratio(_row(stream, "bpfwall"), _row(stream, "xdp-pass"), "gbps"), 0.95, "higher"),
        (f"kernel memory, {results.get('memory', {}).get('rules', 10_000):,} rules + "
         f"{results.get('memory', {}).get('set_size', 1_000_000):,}-prefix list: bpfwall / nftables",
         memory["bpfwall"] / memory["nft"] if memory.get("nft") else None, 0.6, "lower"),
    ]
    return [{"figure": f, "value": v, "target": t, "better": b,
             "met": None if v is None else (v <= t if b == "lower" else v >= t)} for f, v, t, b in figures]
