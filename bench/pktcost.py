"""Per-packet cost of bpfwall_ingress under BPF_PROG_TEST_RUN, and the time apply takes.

Every figure is also given as a ratio to a trivial XDP_DROP program measured
in the same run, so that runs on different machines compare. Prints a table
and writes bench/results/pktcost.json. Not part of `make test`.

    python bench/pktcost.py [--rules 10,1000] [--repeat 500000] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from scapy.all import IP, TCP, UDP, Ether, IPv6

from bpfwall import config, libbpf
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation
from bpfwall.lab import Lab, lab_object_path

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")


def rule_file(n: int) -> str:
    """n rules of the usual shape: a TCP port open to one /24, each different."""
    lines = ["version: 1", "policy: {ingress: drop}", "rules:"]
    for i in range(n):
        lines.append(f"  - {{name: r{i}, proto: tcp, dport: {1000 + i}, "
                     f"src: 10.{i >> 8}.{i & 255}.0/24, action: accept}}")
    return "\n".join(lines) + "\n"


def probes(n: int) -> dict[str, bytes]:
    last = n - 1
    return {
        "first rule": bytes(E / IP(src="10.0.0.5", dst="10.200.0.1") / TCP(dport=1000, flags="S")),
        "last rule": bytes(E / IP(src=f"10.{last >> 8}.{last & 255}.5", dst="10.200.0.1") /
                           TCP(dport=1000 + last, flags="S")),
        # src matches rule 0 and dport rule 1: every field has candidates, the AND is empty
        "no rule (near miss)": bytes(E / IP(src="10.0.0.5", dst="10.200.0.1") / TCP(dport=1001, flags="S")),
        "no rule (UDP)": bytes(E / IP(src="198.51.100.1", dst="10.200.0.1") / UDP(dport=9)),
        # the rules name only IPv4 sources: the IPv6 trie is skipped
        "no rule (TCP, IPv6)": bytes(E / IPv6(src="2001:db8::1", dst="fd42:200::1") / TCP(dport=1000)),
    }


def ns_per_packet(prog_fd: int, frame: bytes, repeat: int, trials: int) -> float:
    runs = [libbpf.test_run_xdp(prog_fd, frame, 0, repeat)[3] for _ in range(trials)]
    return statistics.median(runs)


def time_apply(n: int) -> dict[str, float]:
    """Wall time of `bpfwall apply` (a new process, as an operator runs it) for n rules."""
    with tempfile.TemporaryDirectory() as d, Lab("bench") as lab:
        path = os.path.join(d, "rules.yaml")
        with open(path, "w") as f:
            f.write(rule_file(n))
        cmd = [sys.executable, "-m", "bpfwall.cli", "apply", "-f", path, "-i", lab.server_if,
               "--netns", lab.server_ns]
        out = {}
        for what in ("attach", "swap"):
            t0 = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True)
            out[what] = time.monotonic() - t0
        t0 = time.monotonic()
        ruleset = config.load(path)
        out["parse"] = time.monotonic() - t0
        t0 = time.monotonic()
        compiled = compile_ruleset(ruleset)
        out["compile"] = time.monotonic() - t0
        t0 = time.monotonic()
        Generation.load(compiled).close()
        out["load+fill"] = time.monotonic() - t0
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default="10,1000", help="comma-separated rule counts")
    ap.add_argument("--repeat", type=int, default=500_000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pktcost.json"))
    args = ap.parse_args()
    counts = [int(x) for x in args.rules.split(",")]

    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        drop_fd = obj.prog_fd("xdp_drop_all")
        baseline = ns_per_packet(drop_fd, probes(1)["first rule"], args.repeat, args.trials)

    results: dict = {"baseline_xdp_drop_ns": baseline, "per_packet": [], "apply_seconds": {}}
    print(f"trivial XDP_DROP: {baseline:.1f} ns/packet (BPF_PROG_TEST_RUN, median of {args.trials})\n")
    print(f"{'rules':>6}  {'packet':<22} {'ns/packet':>10} {'x XDP_DROP':>11}")
    for n in counts:
        with Generation.load(compile_ruleset(config.loads(rule_file(n), f"{n}-rules"))) as gen:
            for what, frame in probes(n).items():
                ns = ns_per_packet(gen.prog_fd, frame, args.repeat, args.trials)
                results["per_packet"].append({"rules": n, "packet": what, "ns": ns, "ratio": ns / baseline})
                print(f"{n:>6}  {what:<22} {ns:>10.1f} {ns / baseline:>11.2f}")
    print()
    for n in counts:
        t = time_apply(n)
        results["apply_seconds"][str(n)] = t
        print(f"apply of {n} rules: {t['attach']:.2f} s (first, attaches), {t['swap']:.2f} s (swap); "
              f"in-process: parse {t['parse']:.2f} s, compile {t['compile']:.2f} s, "
              f"load+fill {t['load+fill']:.2f} s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
