"""The bench results as rich tables on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def show(results: dict, out: Console) -> None:
    m = results["machine"]
    out.print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, kernel {m['kernel']}; {m['date']}")
    if "per_packet" in results:
        pp = results["per_packet"]
        base = pp["baseline_xdp_drop_ns"]
        t = Table("rules / set size", "packet", "ns/packet", "x XDP_DROP",
                  title=f"Per packet (BPF_PROG_TEST_RUN, through the dispatcher, which costs "
                        f"{pp.get('dispatcher_ns') or 0:.1f} ns of it); trivial XDP_DROP {base:.1f} ns")
        for r in pp["rows"]:
            what = f"{r['size']} rules" if r["kind"] == "rules" else f"set of {r['size']}"
            t.add_row(what, r["packet"], f"{r['ns']:.1f}", f"{r['ratio']:.2f}")
        out.print(t)
        mem = results.get("memory")
        if mem:
            out.print(f"maps of {mem['rules']} rules + a set of {mem['set_size']} prefixes: "
                      f"{mem['total_bytes'] / 2**20:.1f} MiB ({mem['classes']} classes)")
            kernel = mem.get("kernel_bytes")
            if kernel:
                out.print(f"kernel memory grown by the same rules and set: bpfwall "
                          f"{kernel['bpfwall'] / 2**20:.1f} MiB, nftables {kernel['nft'] / 2**20:.1f} MiB "
                          "(slab and vmalloc)")
    if "flood" in results:
        fl = results["flood"]
        how = (f"{fl['offered_pps'] / 1e3:.0f} kpps offered to each by {fl['sender']}, median of "
               f"{fl['rounds']} interleaved rounds of {fl['seconds_per_round']:g} s")
        for n in dict.fromkeys(r["rules"] for r in fl["rows"]):
            out.print(_flood_table([r for r in fl["rows"] if r["rules"] == n],
                                   f"Flood to a UDP port, {n} rule{'s' if n > 1 else ''} ({how})"))
        blocklist = fl.get("blocklist")
        if blocklist:
            out.print(_flood_table(
                blocklist["rows"], f"Flood from {blocklist['sources']:,} addresses of a blocklist of "
                f"{blocklist['size']:,} ({blocklist['ipv4_elements']:,} IPv4), each peer dropping by its own set"))
            _skips(blocklist, out)
            hosts = blocklist.get("hosts", {})
            if "rows" in hosts:
                out.print(_flood_table(hosts["rows"], f"Flood from a blocklist of {hosts['size']:,} single addresses "
                                                      f"(xdp-filter's table holds at most {hosts['limit']:,})"))
                _skips(hosts, out)
            elif "skipped" in hosts:
                out.print(f"xdp-filter: not measured: {hosts['skipped']}")
        if not fl.get("live_frames"):
            out.print("saturation rate: not measured (this kernel refuses live-frame test runs); "
                      "the figures above are per packet at the offered rate")
    if "stream" in results:
        st = results["stream"]
        t = Table("firewall", "Gbit/s", "runs' range", "x XDP_PASS", "program ns/packet",
                  title=f"TCP stream (iperf3, {st['seconds']:g} s runs, median of {st['rounds']} interleaved)")
        for r in st["rows"]:
            progs = ", ".join(f"{k[:-3]} {v:.0f}" for k, v in r.items()
                              if k.endswith("_ns") and isinstance(v, float))
            lo, hi = r["gbps_spread"]
            t.add_row(r["variant"], f"{r['gbps']:.2f}", f"{lo:.2f}-{hi:.2f}", _num(r.get("ratio")), progs or "-")
        out.print(t)
    if "latency" in results:
        t = Table("tool", "operation", "ms", title="Control plane (wall time of a new process unless noted)")
        for r in results["latency"]["rows"]:
            t.add_row(r["tool"], r["operation"], f"{r['seconds'] * 1000:.1f}")
        out.print(t)
    if results.get("headline"):
        t = Table("figure", "value", "target", "met", title="bpfwall against each peer on its own ground (same run)")
        for h in results["headline"]:
            sign = "<=" if h["better"] == "lower" else ">="
            met = "-" if h["met"] is None else ("yes" if h["met"] else "[red]no[/red]")
            t.add_row(h["figure"], _num(h["value"]), f"{sign} {h['target']:g}", met)
        out.print(t)
    for part, why in results.get("skipped", {}).items():
        out.print(f"[yellow]{part}: not measured: {why}[/yellow]")
    for path in results.get("files", []):
        out.print(f"wrote {path}")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _flood_table(rows: list[dict], title: str) -> Table:
    """Per packet: the XDP program's run time (bpf_stats) and the receiving CPU's softirq
    time, each with its ratio to the trivial XDP_DROP's and to the reference program's."""
    t = Table("firewall", "kpps", "program ns", "x DROP", "x ref", "softirq ns", "runs' range", "x DROP", "x ref",
              title=title)
    for r in rows:
        if "skipped" in r:
            t.add_row(r["variant"], "-", "-", "-", "-", "-", f"skipped: {r['skipped']}", "-", "-")
            continue
        sat = f" ({r['saturation_pps'] / 1e6:.2f} Mpps max)" if r.get("saturation_pps") else ""
        lo, hi = r["softirq_spread_ns"]
        t.add_row(r["variant"], f"{r['pps'] / 1e3:.0f}{sat}", _num(r["prog_ns"], ".1f"), _num(r.get("prog_ratio")),
                  _num(r.get("prog_vs_reference")), _num(r["softirq_ns"], ".0f"), f"{lo:.0f}-{hi:.0f}",
                  _num(r.get("softirq_ratio")), _num(r.get("softirq_vs_reference")))
    return t


def _skips(flood: dict, out: Console) -> None:
    for name, why in flood.get("skipped", {}).items():
        out.print(f"{name}: not measured: {why}")
