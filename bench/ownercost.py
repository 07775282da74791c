"""What rules by owner (`cgroup:`, `user:`) add to the egress path, beside a trivial tc program
measured in the same run. Writes bench/results/ownercost.json.

Per packet: BPF_PROG_TEST_RUN of bpfwall_egress on an outgoing TCP packet, for the same egress
rules without owner keys, with a `cgroup` rule, with a `user` rule, and with both. A test run's
socket is in the caller's cgroup, so this process moves into a cgroup of its own, two levels
below the cgroup2 root (as system.slice/NAME.service is), and back after.

Per connection: a TCP connect() and close from the protected namespace of a lab to a server
in the other: without any program, with a trivial tcx program on egress, and through the CLI's
apply with each rule file; the median time of one connection. The files with owner keys also
judge the connect() call itself (the cgroup hooks, on every connect of the host), so their
rows carry that cost too.

    python bench/ownercost.py [--repeat 500000] [--trials 5] [--connections 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from scapy.all import IP, TCP, Ether

from bpfwall import config, libbpf, owners
from bpfwall.compiler import compile_ruleset
from bpfwall.generation import Generation
from bpfwall.lab import CLIENT_V4, Lab, lab_object_path
from bpfwall.netns import enter
from bpfwall.scope import Scope

PORT = 8090
CLI = [sys.executable, "-m", "bpfwall.cli"]
OUT = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") /
            IP(src="10.200.0.1", dst=CLIENT_V4) / TCP(sport=40000, dport=PORT, flags="S"))

# The egress rules of a host that keeps its storage network for one service; the owner keys are
# what the cases add. The packet measured matches the backup rule (its owner's), else the last.
BASE_RULES = """version: 1
policy: {{ingress: accept, egress: accept}}
rules:
  - {{name: dns, direction: egress, proto: udp, dport: 53, action: accept}}
  - {{name: smtp, direction: egress, proto: tcp, dport: 25, action: drop}}
  - {{name: backup, direction: egress, dst: 10.200.0.0/24{owner}, action: accept}}
  - {{name: no-storage, direction: egress, dst: 10.200.0.0/24, action: reject}}
"""


def rule_files(cgroup: str) -> dict[str, str]:
    return {
        "no owner keys": BASE_RULES.format(owner=""),
        "a cgroup rule": BASE_RULES.format(owner=f", cgroup: {cgroup}"),
        "a user rule": BASE_RULES.format(owner=", user: 0"),
        "cgroup and user": BASE_RULES.format(owner=f", cgroup: {cgroup}, user: 0"),
    }


def median(values) -> float:
    return statistics.median(list(values))


def per_packet(files: dict[str, str], repeat: int, trials: int) -> list[dict]:
    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        tc = obj.prog_fd("tc_pass_all")
        libbpf.test_run_skb(tc, OUT, repeat)
        base = median(libbpf.test_run_skb(tc, OUT, repeat)[1] for _ in range(trials))
    rows = [{"case": "trivial tc (pass)", "ns": base, "ratio": 1.0}]
    for label, text in files.items():
        with Generation.load(compile_ruleset(config.loads(text, label), "egress")) as gen:
            verdict = gen.test_run(OUT)[0]
            gen.test_run(OUT, 0, repeat)
            ns = median(gen.test_run(OUT, 0, repeat)[2] for _ in range(trials))
        rows.append({"case": label, "ns": ns, "ratio": ns / base, "verdict": verdict})
    return rows


# The server of the connections, a process of its own in the client namespace: a thread of
# this process would contend for the GIL with the connecting loop, and that contention, not
# any program, would set the times.
_SERVER = """
import ctypes, os, socket, sys
if ctypes.CDLL(None).setns(os.open("/run/netns/" + sys.argv[1], os.O_RDONLY), 0x40000000) != 0:
    sys.exit("setns failed")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[3])))
s.listen(4096)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


def connect_loop(lab: Lab, n: int) -> float:
    """The median seconds of a TCP connect(), from the protected side to the client. Each
    connection is reset when closed: tens of thousands left in TIME_WAIT would make the
    kernel search ever longer for a free local port, and that search would be measured."""
    times = []
    linger = struct.pack("ii", 1, 0)
    with enter(lab.server_ns):
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            start = time.perf_counter()
            s.connect((CLIENT_V4, PORT))
            times.append(time.perf_counter() - start)
            s.close()
    return median(times)


def trivial_connect(lab: Lab, n: int) -> float:
    """connect_loop with the lab's trivial programs where bpfwall goes: XDP (pass, native) on
    the protected side's ingress and tc (pass) on its egress. A veth with an XDP program
    receives through NAPI, which changes a connection's time more than any program does, so
    this, not the bare veth, is what bpfwall's rows compare with."""
    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        with enter(lab.server_ns):
            ifindex = socket.if_nametoindex(lab.server_if)
            links = [libbpf.link_create(obj.prog_fd("xdp_pass_peer"), ifindex, libbpf.BPF_XDP,
                                        libbpf.XDP_FLAGS_DRV_MODE),
                     libbpf.link_create(obj.prog_fd("tc_pass_all"), ifindex, libbpf.BPF_TCX_EGRESS)]
        try:
            return connect_loop(lab, n)
        finally:
            for link in links:
                os.close(link)


def per_connection(files: dict[str, str], n: int, work: str, rounds: int) -> list[dict]:
    rows = []
    with Lab() as lab:
        server = subprocess.Popen([sys.executable, "-c", _SERVER, lab.client_ns, CLIENT_V4, str(PORT)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            rows = _per_connection(lab, files, n, work, rounds)
        finally:
            server.kill()
            server.wait()
    return rows


@contextlib.contextmanager
def bpf_stats():
    """kernel.bpf_stats_enabled on for the block (each program's run count and time)."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        before = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(before)


def program_runs(scope: Scope, name: str) -> tuple[int, int]:
    """(run count, run ns) of the scope's dispatcher program `name` (egress, connect4), which
    the kernel charges with the generation's program it jumps to; (0, 0) if it has none."""
    path = os.path.join(scope.dispatch_dir, name)
    if not os.path.exists(path):
        return 0, 0
    fd = libbpf.obj_get(path)
    try:
        info = libbpf.prog_info(fd)
        return info.run_cnt, info.run_time_ns
    finally:
        os.close(fd)


def _per_connection(lab: Lab, files: dict[str, str], n: int, work: str, rounds: int) -> list[dict]:
    """Every case once a round, rounds times, the median of its rounds: the time of a connection
    on this VM drifts by several times over a minute, more than any program costs, and taking
    the cases in turn lets the drift fall on all of them alike."""
    scope = Scope(lab.server_ns)
    times: dict[str, list[float]] = {}
    runs: dict[str, dict[str, list[int]]] = {}
    connect_loop(lab, n // 4)  # warm: the first connections pay for caches
    with bpf_stats():
        for _ in range(rounds):
            times.setdefault("trivial XDP + tc (pass)", []).append(trivial_connect(lab, n))
            times.setdefault("no program (bare veth)", []).append(connect_loop(lab, n))
            for label, text in files.items():
                path = os.path.join(work, "rules.yaml")
                with open(path, "w") as f:
                    f.write(text)
                subprocess.run([*CLI, "apply", "-f", path, "-i", lab.server_if, "--netns", lab.server_ns],
                               check=True, capture_output=True)
                before = {p: program_runs(scope, p) for p in ("egress", "connect4")}
                times.setdefault(label, []).append(connect_loop(lab, n))
                for prog, (cnt, ns) in before.items():
                    cnt2, ns2 = program_runs(scope, prog)
                    acc = runs.setdefault(label, {}).setdefault(prog, [0, 0])
                    acc[0] += cnt2 - cnt
                    acc[1] += ns2 - ns
            subprocess.run([*CLI, "down", "--netns", lab.server_ns], check=True, capture_output=True)
    base = median(times["trivial XDP + tc (pass)"])
    rows = []
    for label, values in times.items():
        row = {"case": label, "us": median(values) * 1e6, "ratio": median(values) / base,
               "spread_us": [min(values) * 1e6, max(values) * 1e6]}
        for prog, (cnt, ns) in runs.get(label, {}).items():
            # per connection: the egress program sees about three packets of one (SYN, ACK, FIN...)
            row[f"{prog}_ns_per_run"] = ns / cnt if cnt else None
            row[f"{prog}_runs_per_connection"] = cnt / (n * rounds)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=500_000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--connections", type=int, default=1000, help="a case's connections a round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ownercost.json"))
    args = ap.parse_args()
    mount = owners.cgroup2_mount()
    if mount is None:
        print("no cgroup2 mount on this host: nothing to measure", file=sys.stderr)
        return 1
    top = f"bpfwall-bench-{os.getpid()}"
    cgroup = f"{top}/backup.service"
    home = owners.cgroup_of_pid(os.getpid()) or ""
    os.makedirs(os.path.join(mount, cgroup))
    try:
        with open(os.path.join(mount, cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        files = rule_files(cgroup)
        packets = per_packet(files, args.repeat, args.trials)
        with tempfile.TemporaryDirectory(prefix="bpfwall-ownercost-") as work:
            connections = per_connection(files, args.connections, work, args.rounds)
    finally:
        with open(os.path.join(mount, home, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        os.rmdir(os.path.join(mount, cgroup))
        os.rmdir(os.path.join(mount, top))
    print(f"{'egress, per packet':<28} {'ns':>8} {'x trivial tc':>13}")
    for row in packets:
        print(f"{row['case']:<28} {row['ns']:>8.1f} {row['ratio']:>13.2f}")
    print(f"\n{'TCP connect, per connection':<28} {'us':>8} {'x trivial':>10} {'spread us':>12}"
          f" {'egress ns/pkt':>14} {'connect4 ns/call':>17}")
    for row in connections:
        lo, hi = row["spread_us"]
        eg, cn = row.get("egress_ns_per_run"), row.get("connect4_ns_per_run")
        print(f"{row['case']:<28} {row['us']:>8.1f} {row['ratio']:>10.2f} {f'{lo:.1f}-{hi:.1f}':>12}"
              f" {'-' if eg is None else f'{eg:.0f}':>14} {'-' if cn is None else f'{cn:.0f}':>17}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"per_packet": packets, "per_connection": connections}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
