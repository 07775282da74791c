"""PNG charts of a bench run (matplotlib, no display needed)."""

from __future__ import annotations

import os


def draw(results: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    when = f"{results['machine']['kernel']}, {results['machine']['cpus']} CPUs"

    if "per_packet" in results:
        pp = results["per_packet"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for packet, style in (("first", "o-"), ("last", "s-"), ("none", "^-")):
            rows = [r for r in pp["rows"] if r["kind"] == "rules" and r["packet"] == packet]
            label = {"first": "first rule matches", "last": "last rule matches", "none": "no rule matches"}[packet]
            ax1.plot([r["size"] for r in rows], [r["ns"] for r in rows], style, label=f"bpfwall, {label}")
        ax1.axhline(pp["baseline_xdp_drop_ns"], color="grey", ls="--", label="trivial XDP_DROP")
        ax1.set(xscale="log", xlabel="rules", ylabel="ns per packet", title="Per packet, by rule count")
        ax1.set_ylim(bottom=0)
        ax1.legend(fontsize=8)
        for packet, style in (("first", "o-"), ("none", "^-")):
            rows = [r for r in pp["rows"] if r["kind"] == "set" and r["packet"] == packet]
            ax2.plot([r["size"] for r in rows], [r["ns"] for r in rows], style,
                     label="in the set (first rule)" if packet == "first" else "not in the set (no rule)")
        ax2.axhline(pp["baseline_xdp_drop_ns"], color="grey", ls="--", label="trivial XDP_DROP")
        ax2.set(xscale="log", xlabel="prefixes in the set", ylabel="ns per packet", title="Per packet, by set size")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
        fig.suptitle(f"bpfwall per-packet cost (BPF_PROG_TEST_RUN; {when})", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out_dir, "per_packet.png"))

    if "flood" in results:
        rows = [r for r in results["flood"]["rows"] if "skipped" not in r]
        counts = list(dict.fromkeys(r["rules"] for r in rows))
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        width = 0.8 / max(len(counts), 1)
        for k, n in enumerate(counts):
            xs = [i + k * width for i in range(len(variants))]
            by = {r["variant"]: r for r in rows if r["rules"] == n}
            label = f"{n} rule{'s' if n > 1 else ''}"
            ax1.bar(xs, [(by.get(v) or {}).get("prog_ns") or 0 for v in variants], width, label=label)
            ax2.bar(xs, [(by.get(v) or {}).get("softirq_ns") or 0 for v in variants], width, label=label)
        for ax, label in ((ax1, "XDP program ns per packet (bpf_stats)"),
                          (ax2, "receiving CPU's softirq ns per packet")):
            ax.set_xticks([i + width * (len(counts) - 1) / 2 for i in range(len(variants))])
            ax.set_xticklabels(variants, rotation=20, fontsize=8)
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        ax1.set_title("The program's own cost (XDP programs only)")
        ax2.set_title("The whole receive path's cost (lower is better)")
        fig.suptitle(f"A UDP flood across a veth pair at {results['flood']['offered_pps'] / 1e3:.0f} kpps "
                     f"({when})", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out_dir, "flood.png"))
        blocklist = results["flood"].get("blocklist")
        if blocklist and blocklist.get("rows"):
            files.append(_set_flood_chart(
                blocklist["rows"], out_dir, "flood-blocklist.png",
                f"A flood from {blocklist['sources']} addresses of a blocklist of {blocklist['size']}, "
                f"each dropped by the peer's own set ({when})"))
            hosts = blocklist.get("hosts", {})
            if hosts.get("rows"):
                files.append(_set_flood_chart(
                    hosts["rows"], out_dir, "flood-hosts.png",
                    f"A flood from a blocklist of {hosts['size']} single addresses; xdp-filter holds at most "
                    f"{hosts['limit']:,} ({when})"))

    if "stream" in results:
        rows = results["stream"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([r["variant"] for r in rows], [r["gbps"] for r in rows])
        ax.set(ylabel="Gbit/s", title=f"A TCP stream (iperf3) through the server end ({when})")
        fig.tight_layout()
        files.append(_save(fig, out_dir, "stream.png"))

    if "latency" in results:
        rows = results["latency"]["rows"]
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.2))
        colours = {"bpfwall": "tab:blue", "nft": "tab:orange", "iptables": "tab:green"}
        labels = [f"{r['tool']}: {r['operation']}" for r in rows]
        ax.barh(range(len(rows)), [r["seconds"] * 1000 for r in rows],
                color=[colours.get(r["tool"], "grey") for r in rows])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set(xscale="log", xlabel="milliseconds (log)", title=f"Control-plane latency ({when})")
        fig.tight_layout()
        files.append(_save(fig, out_dir, "latency.png"))
    return files


def _set_flood_chart(rows: list[dict], out_dir: str, name: str, title: str) -> str:
    """The program's and the receiving CPU's cost per packet of each firewall in a flood
    from a set's addresses."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "skipped" not in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["variant"] for r in rows]
    ax1.bar(names, [r.get("prog_ns") or 0 for r in rows])
    ax2.bar(names, [r["softirq_ns"] for r in rows])
    for ax, label in ((ax1, "XDP program ns per packet (bpf_stats)"),
                      (ax2, "receiving CPU's softirq ns per packet")):
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax1.set_title("The program's own cost (lower is better)")
    ax2.set_yscale("log")
    ax2.set_title("The whole receive path (lower is better; log scale)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, name)


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
