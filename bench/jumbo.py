"""Jumbo frames: what multi-buffer awareness (xdp.frags) costs bpfwall_ingress a packet, and
the flood rate it drops in native mode on a lab whose veth pair runs at MTU 9000, each beside
a trivial program in the same run. Writes bench/results/jumbo.json.

Per packet (BPF_PROG_TEST_RUN): a small TCP SYN and an 8,000-byte UDP datagram (handed over
in fragments) through bpfwall_ingress as loaded, and the same object loaded with the
multi-buffer flag taken off (what the program was before it took fragments: the code is
the same, the kernel only hands it one buffer); trivial XDP_DROP beside them.

Flood: the lab's generator sends 64-byte UDP frames across the MTU-9000 veth pair to a
trivial counting XDP_DROP (multi-buffer too, or it could not attach) and to bpfwall with the
1-rule flood rule set, native mode; the best of --trials runs and their spread.

    python bench/jumbo.py [--repeat 300000] [--trials 3] [--packets 50000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from scapy.all import IP, TCP, UDP, Ether, Raw

from bpfwall import config, libbpf
from bpfwall.bench.throughput import Flood
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation
from bpfwall.lab import Lab, lab_object_path

RULES = """
version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: ssh, proto: tcp, dport: 22, action: accept}
  - {name: web, proto: tcp, dport: [80, 443], action: accept}
  - {name: dns, proto: udp, dport: 53, action: accept}
"""
ETH = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
SMALL = bytes(ETH / IP(src="10.200.0.2", dst="10.200.0.1") / TCP(sport=4000, dport=443, flags="S"))
BIG = bytes(ETH / IP(src="10.200.0.2", dst="10.200.0.1") / UDP(sport=4000, dport=53) / Raw(bytes(8000)))
BPF_F_XDP_HAS_FRAGS = 1 << 5


def ns_per_packet(fd: int, frame: bytes, repeat: int, trials: int) -> float:
    libbpf.test_run_xdp(fd, frame, 0, repeat)
    return statistics.median(libbpf.test_run_xdp(fd, frame, 0, repeat)[3] for _ in range(trials))


def per_packet(repeat: int, trials: int) -> list[dict]:
    """Each case once a round, three rounds, the median of them: the cases share the drift."""
    compiled = compile_ruleset(config.loads(RULES, "jumbo"), "ingress")
    times: dict[str, list[float]] = {}
    with (libbpf.BpfObject(lab_object_path()) as obj, Generation.load(compiled) as frags,
          Generation.load(compiled, prog_flags_off=BPF_F_XDP_HAS_FRAGS) as plain):
        obj.load()
        cases = {"trivial XDP_DROP, small frame": (obj.prog_fd("xdp_drop_all"), SMALL),
                 "bpfwall (xdp.frags), small frame": (frags.prog_fd, SMALL),
                 "bpfwall without xdp.frags, small frame": (plain.prog_fd, SMALL),
                 "bpfwall (xdp.frags), 8,000-byte frame": (frags.prog_fd, BIG)}
        for _ in range(3):
            for label, (fd, frame) in cases.items():
                times.setdefault(label, []).append(ns_per_packet(fd, frame, repeat, trials))
    base = statistics.median(times["trivial XDP_DROP, small frame"])
    return [{"case": label, "ns": statistics.median(v), "ratio": statistics.median(v) / base,
             "spread_ns": [min(v), max(v)]} for label, v in times.items()]


def flood(packets: int, trials: int) -> list[dict]:
    rows = []
    with Lab("jumbo", mtu=9000) as lab, tempfile.TemporaryDirectory(prefix="bpfwall-jumbo-") as work:
        gen = Flood(lab)
        try:
            for name in ("xdp-drop", "bpfwall"):
                runs = []
                with gen.variant(name, 1, work) as dropped:
                    for _ in range(trials):
                        runs.append(gen.best_of(dropped, packets, 1, 1.0)["pps"])
                rows.append({"variant": name, "mtu": 9000, "mpps": max(runs) / 1e6,
                             "spread_mpps": [min(runs) / 1e6, max(runs) / 1e6]})
        finally:
            gen.close()
    for row in rows:
        row["ratio"] = row["mpps"] / rows[0]["mpps"]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300_000)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--packets", type=int, default=50_000_000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "jumbo.json"))
    args = ap.parse_args()
    packets = per_packet(args.repeat, 7)
    floods = flood(args.packets, args.trials)
    print(f"{'per packet':<44} {'ns':>6} {'x trivial':>10}")
    for row in packets:
        print(f"{row['case']:<44} {row['ns']:>6.1f} {row['ratio']:>10.2f}")
    print(f"\n{'flood at MTU 9000, native':<30} {'Mpps':>6} {'runs':>12} {'x XDP_DROP':>11}")
    for row in floods:
        lo, hi = row["spread_mpps"]
        print(f"{row['variant']:<30} {row['mpps']:>6.2f} {f'{lo:.2f}-{hi:.2f}':>12} {row['ratio']:>11.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"per_packet": packets, "flood": floods}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
