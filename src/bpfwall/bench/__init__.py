"""`bpfwall bench`: the benchmark suite. A table on stdout, bench.json and PNG charts.

Its parts, each as ratios to baselines measured in the same run:
- per packet (BPF_PROG_TEST_RUN): rule counts and set sizes, first rule, last
  rule and none, beside a trivial XDP_DROP program;
- flood (end to end, namespaces): what each firewall costs per packet on real
  traffic sent at one rate to all (the XDP program's run time from bpf_stats,
  the receiving CPU's softirq time), for bpfwall, nftables netdev ingress and
  inet input, iptables INPUT with ipset, xdp-filter, a reference blocklist
  program and a trivial XDP_DROP; the saturation rate where live frames exist;
- stream: a TCP bulk transfer (iperf3) through bpfwall beside a no-op XDP_PASS;
- control plane: applies, one rule changed, one set element added, beside
  nft and iptables.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .. import scope
from .stream import Streams
from .throughput import Rounds

PARTS = ("packet", "flood", "stream", "latency")


@dataclass
class Plan:
    rule_counts: list[int]
    set_sizes: list[int]
    repeat: int
    trials: int
    flood_rules: list[int]
    flood: Rounds  # the offered rate, and how long and how many rounds each flood runs
    stream: Streams
    latency_rules: int
    latency_set: int
    flood_blocklist: int = 0  # the blocklist flood's set size (0: none)
    parts: list[str] = field(default_factory=lambda: list(PARTS))

    @classmethod
    def full(cls) -> Plan:
        return cls(rule_counts=[1, 10, 100, 1000, 10000], set_sizes=[1000, 100_000, 1_000_000],
                   repeat=200_000, trials=5, flood_rules=[1, 1000],
                   flood=Rounds(rate=300_000, seconds=4.0, rounds=5, saturation_packets=100_000_000),
                   stream=Streams(seconds=5.0, rounds=5),
                   latency_rules=10000, latency_set=1_000_000, flood_blocklist=1_000_000)

    @classmethod
    def quick(cls) -> Plan:
        return cls(rule_counts=[1, 10, 1000], set_sizes=[1000, 100_000], repeat=50_000, trials=3,
                   flood_rules=[1, 1000],
                   flood=Rounds(rate=200_000, seconds=0.5, rounds=2, saturation_packets=5_000_000),
                   stream=Streams(seconds=1.0, rounds=1), latency_rules=1000,
                   latency_set=10_000, flood_blocklist=10_000)


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run(plan: Plan, out_dir: str, progress: Callable[[str], None]) -> dict:
    """Each part in turn; a part that fails (a peer missing, a kernel feature absent) is
    recorded under "skipped" with its reason, and the others are still measured."""
    from . import charts, latency, memory, pktcost, stream, throughput

    scope.require_root()
    scope.ensure_bpffs()
    os.makedirs(out_dir, exist_ok=True)
    results: dict = {"machine": machine(), "plan": asdict(plan), "skipped": {}}
    from .. import kfeatures

    results["features"] = kfeatures.report()
    with tempfile.TemporaryDirectory(prefix="bpfwall-bench-") as work:
        parts: list[tuple[str, Callable[[], dict]]] = [
            ("per_packet", lambda: pktcost.measure(plan.rule_counts, plan.set_sizes, plan.repeat, plan.trials,
                                                   progress)),
            ("memory", lambda: (progress("memory of the maps"),
                                memory.measure(max(plan.rule_counts), max(plan.set_sizes)))[1]),
            ("flood", lambda: throughput.measure(plan.flood_rules, plan.flood, work, progress, plan.flood_blocklist)),
            ("stream", lambda: stream.measure(plan.stream, work, progress)),
            ("latency", lambda: latency.measure(plan.latency_rules, plan.latency_set, work, progress)),
        ]
        part_of = {"per_packet": "packet", "memory": "packet", "flood": "flood", "stream": "stream",
                   "latency": "latency"}
        for key, measure in parts:
            if part_of[key] not in plan.parts:
                continue
            try:
                results[key] = measure()
            except Exception as exc:  # the bench reports what it could not measure, and goes on
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                results["skipped"][key] = why
                progress(f"{key}: skipped: {why}")
    from .figures import headline

    results["headline"] = headline(results)
    path = os.path.join(out_dir, "bench.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    results["files"] = [path] + charts.draw(results, out_dir)
    return results


def measured(results: dict) -> bool:
    """Whether the run measured anything at all."""
    return any(key in results for key in ("per_packet", "memory", "flood", "stream", "latency"))
