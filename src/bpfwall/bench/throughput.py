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
import random
import re
import shutil
import subprocess
import time
from array import array
from collections.abc import Callable, Iterator

from scapy.all import IP, UDP, Ether

from .. import config, libbpf, netns, transaction
from ..errors import RuntimeFailure
from ..lab import CLIENT_V4, SERVER_V4, Lab, lab_object_path
from ..ruleset import Ruleset
from ..scope import Scope
from ..stats import collect
from . import rulesets

VARIANTS = ("xdp-drop", "bpfwall", "nft-netdev", "nft-input", "iptables-input")
# The blocklist flood: each peer with the list as its own set, as its experts configure it.
BLOCKLIST_VARIANTS = ("xdp-drop", "bpfwall", "nft-netdev", "iptables-ipset")
FLOOD_SOURCES = 1 << 20  # lab.bpf.c's flood_sources
# xdp-filter (Debian's xdp-tools): its address table has room for 10,000 and no more, so it
# is measured on a blocklist of that many single addresses, its best case, beside bpfwall.
XDP_FILTER_ADDRESSES = 10_000
XDP_FILTER_PINS = "/sys/fs/bpf/xdp-filter"
LIBXDP_PINS = "/sys/fs/bpf/xdp"  # libxdp's own, for its dispatchers
HOSTS_VARIANTS = ("xdp-drop", "bpfwall", "xdp-filter")


def _ns(lab: Lab, *cmd: str, stdin: str | None = None) -> str:
    """A command inside the server namespace (its pins, if any, are not ours)."""
    res = subprocess.run(["ip", "netns", "exec", lab.server_ns, *cmd], input=stdin, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeFailure(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


XDP_FILTER_SRC = 1  # xdp-filter's MAP_FLAG_SRC: the address is denied as a source


def _xdp_filter_cmd(lab: Lab, *args: str) -> None:
    """xdp-filter in the server namespace, with this host's bpffs (its pins): nsenter enters
    the network namespace only, where `ip netns exec` would remount /sys."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{lab.server_ns}", "xdp-filter", *args],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeFailure(f"xdp-filter {' '.join(args)}: {(res.stderr or res.stdout).strip()}")


def xdp_filter_unavailable() -> str | None:
    """Why xdp-filter cannot be measured here, or None."""
    if not shutil.which("xdp-filter"):
        return "xdp-filter is not installed (Debian package xdp-tools)"
    if os.path.exists(XDP_FILTER_PINS):
        return f"xdp-filter is in use on this host ({XDP_FILTER_PINS} exists); it is left alone"
    return None


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

    def send(self, packets: int, program: str = "xdp_flood") -> float:
        """Floods (xdp_flood: one frame; xdp_flood_sources: from the sources given to
        use_sources()); returns the seconds it took."""
        with netns.enter(self.lab.client_ns):
            t0 = time.perf_counter()
            libbpf.test_run_xdp_live(self.obj.prog_fd(program), self.frame, self.client_ifindex, packets)
            return time.perf_counter() - t0

    def use_sources(self, addresses: list[int]) -> int:
        """The IPv4 sources (ints) xdp_flood_sources picks from, at most FLOOD_SOURCES; how many."""
        n = min(len(addresses), FLOOD_SOURCES)
        # Network order in the map: each address's bytes as the packet carries them.
        values = array("I")
        values.frombytes(b"".join(a.to_bytes(4, "big") for a in addresses[:n]))
        keys = array("I", range(n))
        libbpf.map_update_batch_raw(self.obj.map_fd("flood_sources"), (ctypes.c_uint32 * n).from_buffer(keys),
                                    (ctypes.c_uint32 * n).from_buffer(values), 4, 4, n)
        libbpf.map_update(self.obj.map_fd("flood_source_count"), ctypes.c_uint32(0), ctypes.c_uint32(n))
        return n

    def run_length(self, packets: int, seconds_per_run: float, program: str = "xdp_flood") -> int:
        """How many packets (at most `packets`) a run of about seconds_per_run sends. Each send
        has a fixed cost of its own (the test run's setup and teardown, some 30 ms here),
        so the rate is read from a send long enough that it does not dominate; a short
        run would charge it to the fastest firewall most."""
        count = 20_000
        while True:
            seconds = self.send(count, program)  # also warms caches and NAPI
            if seconds >= 0.2 or count >= packets:
                break
            count = min(packets, count * 4)
        return min(packets, max(count, int(count / seconds * seconds_per_run)))

    def best_of(self, dropped: Callable[[], int], packets: int, trials: int, seconds_per_run: float,
                program: str = "xdp_flood") -> dict:
        """The best of `trials` runs of about seconds_per_run each (at most `packets`)."""
        count = self.run_length(packets, seconds_per_run, program)
        best: dict = {}
        for _ in range(trials):
            before, jiffies = dropped(), _busy_jiffies()
            seconds = self.send(count, program)
            got = dropped() - before
            cpu = (_busy_jiffies() - jiffies) / os.sysconf("SC_CLK_TCK")
            pps = got / seconds
            if not best or pps > best["pps"]:
                best = {"pps": pps, "dropped": got, "sent": count, "seconds": seconds,
                        "cpu_s_per_mpkt": cpu / max(got, 1) * 1e6}
        return best

    def from_sources(self, name: str, ruleset: Ruleset, v4: list[tuple[int, int, int]], workdir: str,
                     packets: int, trials: int, seconds_per_run: float, progress: Callable[[str], None]) -> dict:
        """The row of peer `name` (see blocklist_variant) in a flood from the sources in use."""
        progress(name)
        with self.blocklist_variant(name, ruleset, v4, workdir) as dropped:
            return {"variant": name, **self.best_of(dropped, packets, trials, seconds_per_run, "xdp_flood_sources")}

    @contextlib.contextmanager
    def blocklist_variant(self, name: str, ruleset: Ruleset, v4: list[tuple[int, int, int]],
                          workdir: str) -> Iterator[Callable[[], int]]:
        """Peer `name` dropping what comes from the blocklist (bpfwall: ruleset; the others:
        its IPv4 elements v4, as a set of their own); yields its drop count's reader."""
        lab = self.lab
        if name == "xdp-drop":
            with self.variant("xdp-drop", 1, workdir) as read:
                yield read
        elif name == "bpfwall":
            scope = Scope(lab.server_ns)
            transaction.apply(scope, ruleset, [lab.server_if])
            try:
                yield lambda: next(r["packets"] for r in collect(scope)["rules"] if r["name"] == "blocklist")
            finally:
                transaction.down(scope)
        elif name == "nft-netdev":
            path = os.path.join(workdir, "blocklist.nft")
            with open(path, "w") as f:
                f.write(rulesets.nft_blocklist(v4, lab.server_if))
            _ns(lab, "nft", "-f", path)
            try:
                yield lambda: int(re.search(r"counter packets (\d+)",
                                            _ns(lab, "nft", "list", "chain", "netdev", "bwbench", "c")).group(1))
            finally:
                _ns(lab, "nft", "delete", "table", "netdev", "bwbench")
        elif name == "xdp-filter":
            with self._xdp_filter_dropping(v4) as read:
                yield read
        elif name == "iptables-ipset":
            _ns(lab, "ipset", "restore", stdin=rulesets.ipset_blocklist(v4))
            try:
                _ns(lab, "iptables-legacy", "-A", "INPUT", "-m", "set", "--match-set", "bwbench", "src", "-j", "DROP")

                def read() -> int:
                    out = _ns(lab, "iptables-legacy", "-L", "INPUT", "-v", "-x", "-n")
                    return int(next(line for line in out.splitlines() if "match-set bwbench" in line).split()[0])

                yield read
            finally:
                _ns(lab, "iptables-legacy", "-F", "INPUT")
                _ns(lab, "ipset", "destroy", "bwbench")
        else:
            raise ValueError(name)

    @contextlib.contextmanager
    def _xdp_filter_dropping(self, v4: list[tuple[int, int, int]]) -> Iterator[Callable[[], int]]:
        """xdp-filter loaded on the server end (natively, through libxdp's dispatcher) with
        a deny list of v4's addresses, written into its own table as `xdp-filter ip --mode
        src` does one at a time; yields its XDP_DROP count's reader."""
        lab = self.lab
        libxdp_had_pins = os.path.exists(LIBXDP_PINS)
        _xdp_filter_cmd(lab, "load", "--mode", "native", "--policy", "allow", "--features", "ipv4", lab.server_if)
        try:
            fd = libbpf.obj_get(os.path.join(XDP_FILTER_PINS, "filter_ipv4"))
            try:
                n = len(v4)
                keys = array("I")
                keys.frombytes(b"".join(net.to_bytes(4, "big") for _, net, _ in v4))
                # A per-CPU table (each CPU counts its own hits): a value for every CPU.
                per_cpu = libbpf.map_info(fd).type == libbpf.BPF_MAP_TYPE_PERCPU_HASH
                per_key = libbpf.num_possible_cpus() if per_cpu else 1
                values = (ctypes.c_uint64 * (n * per_key))(*([XDP_FILTER_SRC] * (n * per_key)))
                libbpf.map_update_batch_raw(fd, (ctypes.c_uint32 * n).from_buffer(keys), values, 4, 8 * per_key, n)
            finally:
                os.close(fd)
            stats = libbpf.obj_get(os.path.join(XDP_FILTER_PINS, "xdp_stats_map"))
            ncpu = libbpf.num_possible_cpus()

            def read() -> int:  # per CPU (packets, bytes) of the XDP_DROP action
                values = (ctypes.c_uint64 * (2 * ncpu))()
                libbpf.map_lookup(stats, ctypes.c_uint32(1), values)
                return sum(values[0::2])

            try:
                yield read
            finally:
                os.close(stats)
        finally:
            _xdp_filter_cmd(lab, "unload", lab.server_if)
            if not libxdp_had_pins:  # the directory libxdp made for its dispatcher: gone if empty
                with contextlib.suppress(OSError):
                    os.rmdir(LIBXDP_PINS)

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
            progress: Callable[[str], None], seconds_per_run: float = 1.0, blocklist_size: int = 0) -> dict:
    """packets: the most one run sends; fewer when the firewall is slow (see seconds_per_run).
    blocklist_size: also a flood from the addresses of a blocklist that large, which every
    peer drops by its set (0: not)."""
    rows = []
    blocklist: dict = {}
    with Lab("bench") as lab:
        flood = Flood(lab)
        try:
            for n in rule_counts:
                for name in VARIANTS:
                    progress(f"flood: {name}, {n} rules")
                    with flood.variant(name, n, workdir) as dropped:
                        rows.append({"variant": name, "rules": n,
                                     **flood.best_of(dropped, packets, trials, seconds_per_run)})
            if blocklist_size:
                blocklist = _blocklist_flood(flood, blocklist_size, packets, trials, workdir, progress,
                                             seconds_per_run)
        finally:
            flood.close()
    for n in rule_counts:
        _ratios([r for r in rows if r["rules"] == n])
    return {"rows": rows, "packets": packets, "trials": trials, "seconds_per_run": seconds_per_run,
            **({"blocklist": blocklist} if blocklist else {})}


def _blocklist_flood(flood: Flood, size: int, packets: int, trials: int, workdir: str,
                     progress: Callable[[str], None], seconds_per_run: float) -> dict:
    ruleset = rulesets.blocklist_ruleset(random.Random(size), size)
    v4 = sorted(e for e in ruleset.cidr_sets["blocklist"].elements if e[0] == 4)
    # Each frame from an address of the list (an element's own, or one inside its network),
    # leaving out those the kernel drops as martians before iptables' INPUT could count them.
    sources = [a for a in (net | (1 if plen < 32 else 0) for _, net, plen in v4)
               if a >> 24 not in (0, 127) and a >> 24 < 224]
    random.Random(1).shuffle(sources)
    n_sources = flood.use_sources(sources)
    rows = [flood.from_sources(name, ruleset, v4, workdir, packets, trials, seconds_per_run,
                               lambda name: progress(f"flood from a blocklist of {size}: {name}"))
            for name in BLOCKLIST_VARIANTS]
    _ratios(rows)
    return {"size": size, "ipv4_elements": len(v4), "sources": n_sources, "rows": rows,
            "hosts": _hosts_flood(flood, sources, packets, trials, workdir, progress, seconds_per_run)}


def _hosts_flood(flood: Flood, sources: list[int], packets: int, trials: int, workdir: str,
                 progress: Callable[[str], None], seconds_per_run: float) -> dict:
    """xdp-filter against bpfwall on a blocklist of single addresses as large as
    xdp-filter's table allows, the flood coming from those addresses."""
    skipped = xdp_filter_unavailable()
    if skipped:
        progress(f"flood from {XDP_FILTER_ADDRESSES} addresses: skipped, {skipped}")
        return {"skipped": skipped}
    hosts = [(4, a, 32) for a in sources[:XDP_FILTER_ADDRESSES]]
    ruleset = rulesets.ruleset_dropping(set(hosts))
    n_sources = flood.use_sources(sources[:XDP_FILTER_ADDRESSES])
    rows = [flood.from_sources(name, ruleset, hosts, workdir, packets, trials, seconds_per_run,
                               lambda name: progress(f"flood from a blocklist of {len(hosts)} addresses: {name}"))
            for name in HOSTS_VARIANTS]
    _ratios(rows)
    return {"size": len(hosts), "sources": n_sources, "limit": XDP_FILTER_ADDRESSES, "rows": rows}


def _ratios(rows: list[dict]) -> None:
    """Each row's rate and CPU as ratios to the trivial XDP_DROP's among them."""
    base = next(r for r in rows if r["variant"] == "xdp-drop")
    for r in rows:
        r["pps_ratio"] = r["pps"] / base["pps"]
        # A short run's CPU can round to no jiffy at all: then there is no ratio to give.
        r["cpu_ratio"] = r["cpu_s_per_mpkt"] / base["cpu_s_per_mpkt"] if base["cpu_s_per_mpkt"] else None
