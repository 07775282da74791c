"""`bpfwall bench`: the benchmark suite. A table on stdout, bench.json and PNG charts.

Three parts, each as ratios to baselines measured in the same run:
- per packet (BPF_PROG_TEST_RUN): rule counts and set sizes, first rule, last
  rule and none, beside a trivial XDP_DROP program;
- flood (end to end, namespaces): packets per second dropped and CPU per
  million packets for bpfwall, nftables netdev ingress and inet input,
  iptables INPUT and a trivial XDP_DROP;
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
from dataclasses import dataclass, field

from .. import scope


@dataclass
class Plan:
    rule_counts: list[int]
    set_sizes: list[int]
    repeat: int
    trials: int
    flood_rules: list[int]
    flood_packets: int
    flood_trials: int
    latency_rules: int
    latency_set: int
    flood_blocklist: int = 0  # the blocklist flood's set size (0: none)
    parts: list[str] = field(default_factory=lambda: ["packet", "flood", "latency"])

    @classmethod
    def full(cls) -> Plan:
        return cls(rule_counts=[1, 10, 100, 1000, 10000], set_sizes=[1000, 100_000, 1_000_000],
                   repeat=200_000, trials=5, flood_rules=[1, 1000], flood_packets=100_000_000, flood_trials=3,
                   latency_rules=10000, latency_set=1_000_000, flood_blocklist=1_000_000)

    @classmethod
    def quick(cls) -> Plan:
        return cls(rule_counts=[1, 10, 1000], set_sizes=[1000, 100_000], repeat=50_000, trials=3,
                   flood_rules=[1, 1000], flood_packets=5_000_000, flood_trials=1, latency_rules=1000,
                   latency_set=10_000, flood_blocklist=10_000)


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run(plan: Plan, out_dir: str, progress: Callable[[str], None]) -> dict:
    from . import charts, latency, memory, pktcost, throughput

    scope.require_root()
    scope.ensure_bpffs()
    os.makedirs(out_dir, exist_ok=True)
    results: dict = {"machine": machine(), "plan": plan.__dict__}
    with tempfile.TemporaryDirectory(prefix="bpfwall-bench-") as work:
        if "packet" in plan.parts:
            results["per_packet"] = pktcost.measure(plan.rule_counts, plan.set_sizes, plan.repeat,
                                                    plan.trials, progress)
            progress("memory of the maps")
            results["memory"] = memory.measure(max(plan.rule_counts), max(plan.set_sizes))
        if "flood" in plan.parts:
            results["flood"] = throughput.measure(plan.flood_rules, plan.flood_packets, plan.flood_trials,
                                                  work, progress, 0.3 if plan.repeat < 100_000 else 1.0,
                                                  plan.flood_blocklist)
        if "latency" in plan.parts:
            results["latency"] = latency.measure(plan.latency_rules, plan.latency_set, work, progress)
    path = os.path.join(out_dir, "bench.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    results["files"] = [path] + charts.draw(results, out_dir)
    return results
