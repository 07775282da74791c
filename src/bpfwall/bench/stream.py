"""A TCP bulk stream through bpfwall beside a no-op XDP_PASS: what a host's own traffic pays.

iperf3 (Debian's) sends from the client namespace to a server in the server namespace of a
lab, in two labs set up side by side: one whose server end runs a no-op XDP program
(lab.bpf.c's xdp_pass_all, multi-buffer as bpfwall's programs are), one with bpfwall and a
host's usual rule set (connection tracking, an ingress drop policy, an egress rule, so both
programs run). Rounds interleave the two; the figures are medians. With bpf_stats on, the
programs' run time per packet under the stream is read too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import config, kfeatures, libbpf, netns, transaction
from ..errors import RuntimeFailure
from ..lab import SERVER_V4, Lab, lab_object_path
from ..scope import Scope

PORT = 5201
RULES = f"""\
version: 1
policy: {{ingress: drop, egress: accept}}
rules:
  - {{name: established, ct: [established, related], action: accept}}
  - {{name: ssh, proto: tcp, dport: 22, src: 10.0.0.0/8, action: accept}}
  - {{name: iperf, proto: tcp, dport: {PORT}, action: accept}}
  - {{name: ping, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept, limit: 10/second}}
  - {{name: no-smtp-out, direction: egress, proto: tcp, dport: 25, action: drop}}
"""
VARIANTS = ("xdp-pass", "bpfwall")


@dataclass
class Streams:
    seconds: float  # one iperf3 run
    rounds: int


def _ns_cmd(ns: str, *cmd: str) -> list[str]:
    # nsenter enters the network namespace only (iperf3 makes no pins; either would do).
    return ["nsenter", f"--net=/run/netns/{ns}", *cmd]


class StreamLab:
    """A lab with an iperf3 server on the server side and a program (or bpfwall) on its end."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.server = subprocess.Popen(_ns_cmd(lab.server_ns, "iperf3", "-s", "-B", SERVER_V4, "-p", str(PORT)),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.programs: list[int] = []  # prog fds whose run time is read

    def close(self) -> None:
        self.server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.wait(timeout=5)
        if self.server.poll() is None:
            self.server.kill()
        for fd in self.programs:
            os.close(fd)

    def run(self, seconds: float) -> dict:
        """One iperf3 run: Gbit/s received and, per program, ns a run."""
        before = [libbpf.prog_info(fd) for fd in self.programs]
        for attempt in range(20):  # the server may not listen yet
            res = subprocess.run(_ns_cmd(self.lab.client_ns, "iperf3", "-c", SERVER_V4, "-p", str(PORT), "-J",
                                         "-t", f"{seconds:g}"), capture_output=True, text=True, check=False,
                                 timeout=seconds + 30)
            if res.returncode == 0:
                break
            time.sleep(0.1 * (attempt + 1))
        else:
            raise RuntimeFailure(f"iperf3: {(res.stderr or res.stdout).strip()[:200]}")
        after = [libbpf.prog_info(fd) for fd in self.programs]
        end = json.loads(res.stdout)["end"]
        out = {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
               "sender_cpu_percent": end["cpu_utilization_percent"]["host_total"],
               "receiver_cpu_percent": end["cpu_utilization_percent"]["remote_total"]}
        for b, a in zip(before, after, strict=True):
            runs = a.run_cnt - b.run_cnt
            out[f"{a.name.decode()}_ns"] = (a.run_time_ns - b.run_time_ns) / runs if runs else None
            out[f"{a.name.decode()}_runs"] = runs
        return out


@contextlib.contextmanager
def _variant(name: str, lab: Lab, workdir: str) -> Iterator[StreamLab]:
    s = StreamLab(lab)
    try:
        with netns.enter(lab.server_ns):
            ifindex = netns.ifindex(lab.server_if)
        if name == "xdp-pass":
            with libbpf.BpfObject(lab_object_path()) as obj:
                obj.load()
                with netns.enter(lab.server_ns):
                    link = libbpf.link_create(obj.prog_fd("xdp_pass_all"), ifindex, libbpf.BPF_XDP,
                                              libbpf.XDP_FLAGS_DRV_MODE)
                s.programs.append(os.dup(obj.prog_fd("xdp_pass_all")))  # outlives the object, as the link does
            try:
                yield s
            finally:
                os.close(link)
        else:
            path = os.path.join(workdir, "stream.yaml")
            with open(path, "w") as f:
                f.write(RULES)
            scope = Scope(lab.server_ns)
            transaction.apply(scope, config.load(path), [lab.server_if])
            try:
                for direction in ("ingress", "egress"):
                    link = libbpf.obj_get(scope.link_pin(lab.server_if, direction))
                    try:
                        s.programs.append(libbpf.prog_get_fd_by_id(libbpf.link_info(link).prog_id))
                    finally:
                        os.close(link)
                yield s
            finally:
                transaction.down(scope)
    finally:
        s.close()


def measure(plan: Streams, workdir: str, progress: Callable[[str], None]) -> dict:
    if not shutil.which("iperf3"):
        raise RuntimeFailure("iperf3 is not installed (Debian package iperf3)")
    stats_fd = libbpf.enable_stats() if kfeatures.probe()["bpf_stats"].available else None
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    try:
        with contextlib.ExitStack() as stack:
            labs = {}
            for k, name in enumerate(VARIANTS):
                progress(f"stream: setting up {name}")
                lab = stack.enter_context(Lab(f"st{k}"))
                labs[name] = stack.enter_context(_variant(name, lab, workdir))
            for r in range(plan.rounds):
                for name in VARIANTS[r % 2:] + VARIANTS[: r % 2]:
                    progress(f"stream: round {r + 1} of {plan.rounds}, {name}")
                    runs[name].append(labs[name].run(plan.seconds))
    finally:
        if stats_fd is not None:
            os.close(stats_fd)
    rows = []
    for name in VARIANTS:
        row = {"variant": name, "runs": len(runs[name])}
        for key in runs[name][0]:
            values = [r[key] for r in runs[name] if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        row["gbps_spread"] = [min(r["gbps"] for r in runs[name]), max(r["gbps"] for r in runs[name])]
        rows.append(row)
    base = rows[0]["gbps"]
    for row in rows:
        row["ratio"] = row["gbps"] / base if base else None
    return {"seconds": plan.seconds, "rounds": plan.rounds, "rules": RULES, "rows": rows}
