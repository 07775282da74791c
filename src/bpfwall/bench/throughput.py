"""Packet-dropping throughput end to end: a flood across a veth pair, each firewall in turn.

The generator is the lab's xdp_flood program run with BPF_PROG_TEST_RUN in
live-frames mode in the client namespace: every copy of the frame leaves the
client's veth end (XDP_TX) and arrives at the server's, where the firewall
under test drops it. Generator and receiver share a CPU (the receiving NAPI
poll runs as the generator's batch ends), so packets per second compare the
receivers' costs; CPU seconds per million packets come from /proc/stat.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator

from scapy.all import IP, UDP, Ether

from .. import config, libbpf, netns, transaction
from ..errors import RuntimeFailure
from ..lab import CLIENT_V4, SERVER_V4, Lab, lab_object_path
from ..scope import Scope
from ..stats import collect
from . import rulesets

VARIANTS = ("xdp-drop", "bpfwall", "nft-netdev", "nft-input", "iptables-input")


def _ns(lab: Lab, *cmd: str, stdin: str | None = None) -> str:
    """A command inside the server namespace (its pins, if any, are not ours)."""
    res = subprocess.run(["ip", "netns", "exec", lab.server_ns, *cmd], input=stdin, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeFailure(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", dev], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]["address"]


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


class Flood:
    """One lab, one generator; each variant is set up, flooded and torn down in turn."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.obj = libbpf.BpfObject(lab_object_path())
        self.obj.load()
        self.frame = bytes(Ether(dst=_mac(lab.server_ns, lab.server_if), src=_mac(lab.client_ns, lab.client_if))
                           / IP(src=CLIENT_V4, dst=SERVER_V4) / UDP(sport=4321, dport=rulesets.FLOOD_PORT)
                           / (b"x" * 18))
        with netns.enter(lab.client_ns):
            self.client_ifindex = netns.ifindex(lab.client_if)
        # Without an XDP program of its own, a veth takes XDP_TX frames only with NAPI on, i.e. GRO.
        _ns(lab, "ethtool", "-K", lab.server_if, "gro", "on")

    def close(self) -> None:
        self.obj.close()

    def send(self, packets: int) -> float:
        """Floods; returns the seconds it took."""
        with netns.enter(self.lab.client_ns):
            t0 = time.perf_counter()
            libbpf.test_run_xdp_live(self.obj.prog_fd("xdp_flood"), self.frame, self.client_ifindex, packets)
            return time.perf_counter() - t0

    @contextlib.contextmanager
    def variant(self, name: str, n_rules: int, workdir: str) -> Iterator[Callable[[], int]]:
        """Puts variant `name` with n_rules in place; yields a function that reads its drop count."""
        lab = self.lab
        if name == "xdp-drop":
            with netns.enter(lab.server_ns):
                link = libbpf.link_create(self.obj.prog_fd("xdp_drop_count"), netns.ifindex(lab.server_if),
                                          libbpf.BPF_XDP, libbpf.XDP_FLAGS_DRV_MODE)
            fd = self.obj.map_fd("dropped")
            ncpu = libbpf.num_possible_cpus()

            def read() -> int:
                values = (ctypes.c_uint64 * ncpu)()
                libbpf.map_lookup(fd, ctypes.c_uint32(0), values)
                return sum(values)

            try:
                yield read
            finally:
                os.close(link)
        elif name == "bpfwall":
            path = os.path.join(workdir, f"flood-{n_rules}.yaml")
            with open(path, "w") as f:
                f.write(rulesets.flood_rules(n_rules))
            scope = Scope(lab.server_ns)
            transaction.apply(scope, config.load(path), [lab.server_if])

            def read() -> int:
                return next(r["packets"] for r in collect(scope)["rules"] if r["name"] == "flood")

            try:
                yield read
            finally:
                transaction.down(scope)
        elif name in ("nft-netdev", "nft-input"):
            hook = "netdev" if name == "nft-netdev" else "inet"
            _ns(lab, "nft", "-f", "-", stdin=rulesets.nft_rules(n_rules, hook, lab.server_if, as_map=True))
            family = "netdev" if hook == "netdev" else "inet"

            def read() -> int:
                out = _ns(lab, "nft", "list", "chain", family, "bwbench", "c")
                return int(re.search(r"counter packets (\d+)", out).group(1))

            try:
                yield read
            finally:
                _ns(lab, "nft", "delete", "table", family, "bwbench")
        elif name == "iptables-input":
            # Classic iptables (the legacy x_tables backend), the one the comparison is about.
            _ns(lab, "iptables-legacy-restore", stdin=rulesets.iptables_rules(n_rules))

            def read() -> int:
                out = _ns(lab, "iptables-legacy", "-L", "INPUT", "-v", "-x", "-n")
                last = [line for line in out.splitlines() if "dpt:" + str(rulesets.FLOOD_PORT) in line][-1]
                return int(last.split()[0])

            try:
                yield read
            finally:
                _ns(lab, "iptables-legacy", "-F", "INPUT")
        else:
            raise ValueError(name)


def measure(rule_counts: list[int], packets: int, trials: int, workdir: str,
            progress: Callable[[str], None], seconds_per_run: float = 1.0) -> dict:
    """packets: the most one run sends; fewer when the firewall is slow (see seconds_per_run)."""
    rows = []
    with Lab("bench") as lab:
        flood = Flood(lab)
        try:
            for n in rule_counts:
                for name in VARIANTS:
                    progress(f"flood: {name}, {n} rules")
                    best = None
                    with flood.variant(name, n, workdir) as dropped:
                        # Warm up (caches, NAPI), and size the runs to about a second each:
                        # a linear rule walk can be a hundred times slower than XDP.
                        warm = 20_000
                        count = min(packets, max(warm, int(warm / flood.send(warm) * seconds_per_run)))
                        for _ in range(trials):
                            before, jiffies = dropped(), _busy_jiffies()
                            seconds = flood.send(count)
                            got = dropped() - before
                            cpu = (_busy_jiffies() - jiffies) / os.sysconf("SC_CLK_TCK")
                            pps = got / seconds
                            if best is None or pps > best["pps"]:
                                best = {"pps": pps, "dropped": got, "sent": count, "seconds": seconds,
                                        "cpu_s_per_mpkt": cpu / max(got, 1) * 1e6}
                    rows.append({"variant": name, "rules": n, **best})
        finally:
            flood.close()
    for n in rule_counts:
        base = next(r for r in rows if r["variant"] == "xdp-drop" and r["rules"] == n)
        for r in rows:
            if r["rules"] == n:
                r["pps_ratio"] = r["pps"] / base["pps"]
                r["cpu_ratio"] = r["cpu_s_per_mpkt"] / base["cpu_s_per_mpkt"]
    return {"rows": rows, "packets": packets, "trials": trials, "seconds_per_run": seconds_per_run}
