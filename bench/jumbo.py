"""Jumbo frames: what multi-buffer awareness (xdp.frags) costs bpfwall_ingress a packet, and
the flood rate it drops in native mode on a lab whose veth pair runs at MTU 9000, each beside
a trivial program in the same run. Writes bench/results/jumbo.json.

Per packet (BPF_PROG_TEST_RUN): a small TCP SYN and an 8,000-byte UDP datagram (handed over
in fragments) through bpfwall_ingress as loaded, and the same object loaded with the
multi-buffer flag taken off (what the program was before it took fragments: the code is
the same, the kernel only hands it one buffer); trivial XDP_DROP beside them.

Flood: the lab's sender sends 64-byte UDP frames across an MTU-9000 veth pair to a trivial
counting XDP_DROP (multi-buffer too, or it could not attach) and to bpfwall with the 1-rule
flood rule set, native mode, at one offered rate: the program's run time and the receiving
CPU's softirq time per packet, medians of --rounds interleaved rounds, as `bpfwall bench`
measures its floods.

    python bench/jumbo.py [--repeat 300000] [--rounds 5] [--rate 300000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from scapy.all import IP, TCP, UDP, Ether, Raw

from bpfwall import config, kfeatures, libbpf
from bpfwall.bench.throughput import Rounds, flood_each
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation
from bpfwall.lab import lab_object_path

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


def flood(rate: float, rounds: int) -> list[dict]:
    stats = libbpf.enable_stats() if kfeatures.probe()["bpf_stats"].available else None
    try:
        with tempfile.TemporaryDirectory(prefix="bpfwall-jumbo-") as work:
            got = flood_each("at MTU 9000", ("xdp-drop", "bpfwall"), lambda f, name: f.variant(name, 1, work),
                             Rounds(rate=rate, seconds=4.0, rounds=rounds), lambda msg: print(f"... {msg}"),
                             mtu=9000)
    finally:
        if stats is not None:
            os.close(stats)
    return got["rows"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=300_000, help="frames a second offered to each")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "jumbo.json"))
    args = ap.parse_args()
    packets = per_packet(args.repeat, 7)
    floods = flood(args.rate, args.rounds)
    print(f"{'per packet':<44} {'ns':>6} {'x trivial':>10}")
    for row in packets:
        print(f"{row['case']:<44} {row['ns']:>6.1f} {row['ratio']:>10.2f}")
    print(f"\n{'flood at MTU 9000, native':<30} {'kpps':>6} {'program ns':>11} {'softirq ns':>11} {'x XDP_DROP':>11}")
    for row in floods:
        prog = "-" if row["prog_ns"] is None else f"{row['prog_ns']:.1f}"
        ratio = "-" if row.get("softirq_ratio") is None else f"{row['softirq_ratio']:.2f}"
        print(f"{row['variant']:<30} {row['pps'] / 1e3:>6.0f} {prog:>11} {row['softirq_ns']:>11.0f} {ratio:>11}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"per_packet": packets, "flood": floods}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
