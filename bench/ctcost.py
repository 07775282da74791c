"""Per-packet cost with connection tracking on, ingress (XDP) and egress (tcx), beside the
stateless figures and trivial programs measured in the same run; and the memory of the
connection table at its default size. Writes bench/results/ctcost.json.

    python bench/ctcost.py [--repeat 500000] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from scapy.all import IP, TCP, UDP, Ether

from bpfwall import config, libbpf
from bpfwall.bench.memory import map_memlock
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import CT_MAPS, Generation
from bpfwall.lab import lab_object_path

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
HOST, PEER = "10.200.0.1", "10.200.0.2"

STATELESS = """version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: ssh, proto: tcp, dport: 22, action: accept}
  - {name: web, proto: tcp, dport: [80, 443], action: accept}
"""
STATEFUL = """version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: replies, ct: [established, related], action: accept}
  - {name: ssh, proto: tcp, dport: 22, action: accept}
  - {name: web, proto: tcp, dport: [80, 443], action: accept}
  - {name: no-smtp-out, direction: egress, proto: tcp, dport: 25, action: drop}
"""

OUT = bytes(E / IP(src=HOST, dst=PEER) / TCP(sport=40000, dport=8443, flags="A"))
REPLY = bytes(E / IP(src=PEER, dst=HOST) / TCP(sport=8443, dport=40000, flags="A"))
STRANGER = bytes(E / IP(src="198.51.100.7", dst=HOST) / UDP(sport=1234, dport=9))
SERVICE = bytes(E / IP(src=PEER, dst=HOST) / TCP(sport=50000, dport=22, flags="S"))


def median_ns(run, frame: bytes, repeat: int, trials: int) -> float:
    return statistics.median(run(frame, repeat) for _ in range(trials))



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=500_000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ctcost.json"))
    args = ap.parse_args()
    r, t = args.repeat, args.trials
    rows = []

    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        xdp_fd, tc_fd = obj.prog_fd("xdp_drop_all"), obj.prog_fd("tc_pass_all")
        xdp_base = median_ns(lambda f, n: libbpf.test_run_xdp(xdp_fd, f, 0, n)[3], REPLY, r, t)
        tc_base = median_ns(lambda f, n: libbpf.test_run_skb(tc_fd, f, n)[1], OUT, r, t)
    rows.append(("trivial XDP_DROP", "ingress", xdp_base, 1.0))
    rows.append(("trivial tc (pass)", "egress", tc_base, 1.0))

    def measure(text: str, label: str) -> None:
        rs = config.loads(text, label)
        gi = Generation.load(compile_ruleset(rs, "ingress"))
        ct = {n: gi.map_fds[n] for n in CT_MAPS} if rs.uses_ct() else None
        ge = Generation.load(compile_ruleset(rs, "egress"), None, ct)
        try:
            # the flow exists from here on (stateful): its replies are established
            ge.test_run(OUT)
            for what, gen, frame, base in (
                ("egress, outgoing packet", ge, OUT, tc_base),
                ("ingress, reply of a flow", gi, REPLY, xdp_base),
                ("ingress, new to a service", gi, SERVICE, xdp_base),
                ("ingress, stranger (policy drop)", gi, STRANGER, xdp_base),
            ):
                ns = median_ns(lambda f, n, g=gen: g.test_run(f, 0, n)[2], frame, r, t)
                rows.append((f"{label}: {what}", gen.direction, ns, ns / base))
        finally:
            gi.close()
            ge.close()

    measure(STATELESS, "stateless")
    measure(STATEFUL, "tracking on")

    # memory of the table at its default size (262,144 entries), as the kernel charges it
    rs = config.loads(STATEFUL, "default-size")
    with Generation.load(compile_ruleset(rs, "ingress")) as g:
        table_bytes = map_memlock(g.map_fds["conntrack"])

    print(f"{'case':<48} {'hook':<8} {'ns/packet':>10} {'x trivial':>10}")
    for name, hook, ns, ratio in rows:
        print(f"{name:<48} {hook:<8} {ns:>10.1f} {ratio:>10.2f}")
    print(f"\nconnection table at 262,144 entries: {table_bytes / 2**20:.1f} MiB "
          f"({table_bytes / 262144:.0f} bytes a flow)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": [dict(zip(("case", "hook", "ns", "ratio"), row, strict=True)) for row in rows],
                   "conntrack_bytes_default": table_bytes}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
