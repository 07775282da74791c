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
        t = Table("firewall", "rules", "Mpps dropped", "x XDP_DROP", "CPU s / Mpkt", "x XDP_DROP",
                  title=f"Flood across veth (runs of ~{results['flood']['seconds_per_run']} s, at most "
                        f"{results['flood']['packets']} packets, best of {results['flood']['trials']})")
        for r in results["flood"]["rows"]:
            t.add_row(r["variant"], str(r["rules"]), *_flood_cells(r))
        out.print(t)
        blocklist = results["flood"].get("blocklist")
        if blocklist:
            out.print(_set_flood_table(
                blocklist["rows"], f"Flood from {blocklist['sources']} addresses of a blocklist of "
                f"{blocklist['size']} ({blocklist['ipv4_elements']} IPv4), each peer dropping by its own set"))
            hosts = blocklist.get("hosts", {})
            if "skipped" in hosts:
                out.print(f"xdp-filter: not measured: {hosts['skipped']}")
            elif hosts:
                out.print(_set_flood_table(
                    hosts["rows"], f"Flood from a blocklist of {hosts['size']} single addresses "
                    f"(xdp-filter's table holds at most {hosts['limit']:,})"))
    if "latency" in results:
        t = Table("tool", "operation", "ms", title="Control plane (wall time of a new process unless noted)")
        for r in results["latency"]["rows"]:
            t.add_row(r["tool"], r["operation"], f"{r['seconds'] * 1000:.1f}")
        out.print(t)
    for path in results.get("files", []):
        out.print(f"wrote {path}")


def _flood_cells(r: dict) -> tuple[str, str, str, str]:
    """A flood row's rate and CPU, each with its ratio to XDP_DROP's ("-": none measured)."""
    cpu_ratio = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.2f}"
    return f"{r['pps'] / 1e6:.2f}", f"{r['pps_ratio']:.2f}", f"{r['cpu_s_per_mpkt']:.3f}", cpu_ratio


def _set_flood_table(rows: list[dict], title: str) -> Table:
    t = Table("firewall", "Mpps dropped", "x XDP_DROP", "CPU s / Mpkt", "x XDP_DROP", title=title)
    for r in rows:
        t.add_row(r["variant"], *_flood_cells(r))
    return t
