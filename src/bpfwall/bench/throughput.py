"""The flood benchmark: what each firewall costs per packet on real traffic, in one run.

Every firewall gets a lab of its own (a veth pair between two namespaces), all set up before
the first round. The lab's sender (bpfwall-flood, an AF_PACKET transmit ring, which every
kernel has) sends 64-byte UDP frames from CPU 0 at one offered rate for every firewall,
into a veth of its own whose XDP program hands each frame through a cpumap to CPU 1, where
it is redirected out of the lab's client end. So the server end receives XDP frames on CPU 1,
as from a NIC's driver: XDP firewalls run before any socket buffer exists, and netfilter gets
one built from the frame (GRO on, as a driver's NAPI has it). Rounds interleave (each floods
every firewall once, in a rotated order) and each figure is the median of the rounds:

- prog_ns: the attached XDP program's run time per run (kernel bpf_stats, switched on for
  the bench): what the program itself costs a packet;
- softirq_ns: the receiving CPU's network receive softirq time per packet, timed to the
  nanosecond by two tracepoint programs (lab.bpf.c's net_rx_entry/exit): the whole receive
  path, the firewall included, for XDP and netfilter alike. (The cpumap's hand-over runs
  outside softirq, in its own thread.) softirq_tick_ns is the same from /proc/stat, sampled
  at the tick, as a cross-check.

Where the kernel allows live-frame test runs (kfeatures), the saturation rate is measured
beside them with the lab's xdp_flood generator, which sends as fast as the receiver drops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scapy.all import IP, UDP, Ether

from .. import config, kfeatures, libbpf, netns, transaction
from ..errors import RuntimeFailure
from ..lab import CLIENT_V4, SERVER_V4, Lab, lab_object_path
from ..ruleset import Ruleset
from ..scope import Scope
from ..sender import Sender
from ..stats import collect
from . import rulesets

VARIANTS = ("xdp-drop", "bpfwall", "nft-netdev", "nft-input", "iptables-input")
# The blocklist flood: each peer with the list as its own set, as its experts configure it,
# beside the reference program: one hash lookup of the source, the least a blocklist does.
BLOCKLIST_VARIANTS = ("xdp-drop", "reference", "bpfwall", "nft-netdev", "iptables-ipset")
FLOOD_SOURCES = 1 << 20  # lab.bpf.c's flood_sources
# xdp-filter (Debian's xdp-tools): its address table has room for 10,000 and no more, so it
# is measured on a blocklist of that many single addresses, its best case, beside bpfwall.
XDP_FILTER_ADDRESSES = 10_000
XDP_FILTER_PINS = "/sys/fs/bpf/xdp-filter"
LIBXDP_PINS = "/sys/fs/bpf/xdp"  # libxdp's own, for its dispatchers
HOSTS_VARIANTS = ("xdp-drop", "reference", "bpfwall", "xdp-filter")
SENDER_CPU, RECEIVER_CPU = 0, 1
CPUMAP_QUEUE = 2048


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


def _softirq_ticks(cpu: int) -> int:
    """CPU cpu's softirq time so far, in /proc/stat's USER_HZ ticks."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                return int(line.split()[7])
    raise RuntimeFailure(f"/proc/stat has no line for cpu{cpu}")


class NetRxClock:
    """Each CPU's NET_RX softirq time, exact: the lab object's two tracepoint programs
    on softirq_entry and softirq_exit, attached for as long as the clock is open."""

    def __init__(self) -> None:
        self.obj = libbpf.BpfObject(lab_object_path())
        self.obj.load()
        self.links: list[int] = []
        try:
            for prog, tracepoint in (("net_rx_entry", "softirq_entry"), ("net_rx_exit", "softirq_exit")):
                self.links.append(libbpf.raw_tracepoint_open(self.obj.prog_fd(prog), tracepoint))
        except OSError:
            self.close()
            raise

    def ns(self, cpu: int) -> int:
        values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
        libbpf.map_lookup(self.obj.map_fd("net_rx_time"), ctypes.c_uint32(1), values)
        return values[cpu]

    def close(self) -> None:
        for link in self.links:
            os.close(link)
        self.links.clear()
        self.obj.close()


@dataclass
class Sample:
    """One round of one firewall: per packet costs in ns (prog_ns None: no XDP program)."""

    packets: int
    seconds: float
    dropped: int
    softirq_ns: float
    softirq_tick_ns: float
    prog_ns: float | None


class Flood:
    """One lab, its sender and the sender's way in; the firewall under test goes on the
    server end."""

    def __init__(self, lab: Lab, clock: NetRxClock) -> None:
        self.lab = lab
        self.clock = clock
        self.obj = libbpf.BpfObject(lab_object_path())
        self.obj.load()
        self.ref: libbpf.BpfObject | None = None
        self.links: list[int] = []
        self.frame = bytes(Ether(dst=_mac(lab.server_ns, lab.server_if), src=_mac(lab.client_ns, lab.client_if))
                           / IP(src=CLIENT_V4, dst=SERVER_V4) / UDP(sport=4321, dport=rulesets.FLOOD_PORT)
                           / (b"x" * 18))
        with netns.enter(lab.client_ns):
            self.client_ifindex = netns.ifindex(lab.client_if)
        with netns.enter(lab.server_ns):
            self.server_ifindex = netns.ifindex(lab.server_if)
        # NAPI at the receiving end, as a NIC driver has it: a veth takes XDP frames only
        # then (and GRO, which netfilter's packets go through as from a driver).
        _ns(lab, "ethtool", "-K", lab.server_if, "gro", "on")
        self.sender = Sender(lab.client_ns, self._way_in(), [self.frame], cpu=SENDER_CPU)

    def _way_in(self) -> str:
        """A veth pair of the sender's own in the client namespace: frames sent into one end
        reach the other's XDP program (xdp_inject), which hands them through a cpumap to
        RECEIVER_CPU, whose cpumap program redirects them out of the lab's client end.
        Returns the end to send into."""
        lab, pid = self.lab, os.getpid()
        send_end, inject_end = f"bw{pid}i", f"bw{pid}j"
        subprocess.run(["ip", "-n", lab.client_ns, "link", "add", send_end, "type", "veth", "peer", "name",
                        inject_end], check=True, capture_output=True)
        for dev in (send_end, inject_end):
            subprocess.run(["ip", "-n", lab.client_ns, "link", "set", dev, "up"], check=True, capture_output=True)
        conf = self.obj.map_fd("inject_conf")
        libbpf.map_update(conf, ctypes.c_uint32(0), ctypes.c_uint32(RECEIVER_CPU))
        libbpf.map_update(conf, ctypes.c_uint32(1), ctypes.c_uint32(self.client_ifindex))
        entry = (ctypes.c_uint32 * 2)(CPUMAP_QUEUE, self.obj.prog_fd("xdp_inject_cpumap"))  # bpf_cpumap_val
        libbpf.map_update(self.obj.map_fd("inject_cpus"), ctypes.c_uint32(RECEIVER_CPU), entry)
        with netns.enter(lab.client_ns):
            self.links.append(libbpf.link_create(self.obj.prog_fd("xdp_inject"), netns.ifindex(inject_end),
                                                 libbpf.BPF_XDP, libbpf.XDP_FLAGS_DRV_MODE))
        return send_end

    def close(self) -> None:
        self.sender.close()
        for link in self.links:
            os.close(link)
        self.obj.close()
        if self.ref is not None:
            self.ref.close()

    def use_sources(self, addresses: list[int]) -> int:
        """Each frame from one of these IPv4 sources (ints) at random, at most FLOOD_SOURCES; how many."""
        n = min(len(addresses), FLOOD_SOURCES)
        self.sender.use_sources(addresses[:n])
        # The live-frame generator's copy (xdp_flood_sources), in network order.
        values = array("I")
        values.frombytes(b"".join(a.to_bytes(4, "big") for a in addresses[:n]))
        keys = array("I", range(n))
        libbpf.map_update_batch_raw(self.obj.map_fd("flood_sources"), (ctypes.c_uint32 * n).from_buffer(keys),
                                    (ctypes.c_uint32 * n).from_buffer(values), 4, 4, n)
        libbpf.map_update(self.obj.map_fd("flood_source_count"), ctypes.c_uint32(0), ctypes.c_uint32(n))
        return n

    def _attached_program(self) -> int | None:
        """An fd of the XDP program attached to the server end (None: none)."""
        with netns.enter(self.lab.server_ns):
            prog_id = libbpf.xdp_prog_id(self.server_ifindex)
        return libbpf.prog_get_fd_by_id(prog_id) if prog_id else None

    def sample(self, dropped: Callable[[], int], count: int, rate: float) -> Sample:
        """Sends count frames at rate; what the firewall dropped and what it cost a packet
        (per packet it judged: a receiver slower than the rate loses the rest at the
        cpumap's queue, as a NIC's ring would)."""
        prog = self._attached_program()
        try:
            p0 = libbpf.prog_info(prog) if prog is not None else None
            d0 = dropped()
            s0, t0 = _softirq_ticks(RECEIVER_CPU), self.clock.ns(RECEIVER_CPU)
            sent = self.sender.send(count=count, rate=rate)
            time.sleep(0.01)  # the cpumap's queue drains
            s1, t1 = _softirq_ticks(RECEIVER_CPU), self.clock.ns(RECEIVER_CPU)
            d1 = dropped()
            p1 = libbpf.prog_info(prog) if prog is not None else None
        finally:
            if prog is not None:
                os.close(prog)
        n = max(d1 - d0, 1)
        prog_ns = None
        if p0 is not None and p1 is not None and p1.run_cnt > p0.run_cnt:
            prog_ns = (p1.run_time_ns - p0.run_time_ns) / (p1.run_cnt - p0.run_cnt)
        return Sample(packets=sent.packets, seconds=sent.seconds, dropped=d1 - d0,
                      softirq_ns=(t1 - t0) / n, softirq_tick_ns=(s1 - s0) / os.sysconf("SC_CLK_TCK") * 1e9 / n,
                      prog_ns=prog_ns)

    # --- the saturation rate, where live-frame test runs exist ------------------------------------

    def _live_send(self, packets: int, program: str) -> float:
        """Floods with the live-frame generator (xdp_flood: one frame; xdp_flood_sources: from
        the sources given to use_sources()); returns the seconds it took."""
        with netns.enter(self.lab.client_ns):
            t0 = time.perf_counter()
            libbpf.test_run_xdp_live(self.obj.prog_fd(program), self.frame, self.client_ifindex, packets)
            return time.perf_counter() - t0

    def saturation(self, dropped: Callable[[], int], packets: int, trials: int, seconds_per_run: float,
                   program: str = "xdp_flood") -> float:
        """The best drop rate of `trials` live-frame floods of about seconds_per_run each (at
        most `packets`). Each send has a fixed cost of its own (the test run's setup, some
        30 ms), so the run length is taken from a send long enough that it does not dominate."""
        count = 20_000
        while True:
            seconds = self._live_send(count, program)  # also warms caches and NAPI
            if seconds >= 0.2 or count >= packets:
                break
            count = min(packets, count * 4)
        count = min(packets, max(count, int(count / seconds * seconds_per_run)))
        best = 0.0
        for _ in range(trials):
            before = dropped()
            seconds = self._live_send(count, program)
            best = max(best, (dropped() - before) / seconds)
        return best

    @contextlib.contextmanager
    def blocklist_variant(self, name: str, ruleset: Ruleset, v4: list[tuple[int, int, int]],
                          workdir: str) -> Iterator[Callable[[], int]]:
        """Peer `name` dropping what comes from the blocklist (bpfwall: ruleset; the others:
        its IPv4 elements v4, as a set of their own); yields its drop count's reader."""
        lab = self.lab
        if name == "xdp-drop":
            with self.variant("xdp-drop", 1, workdir) as read:
                yield read
        elif name == "reference":
            with self._reference_dropping(v4) as read:
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
    def _reference_dropping(self, v4: list[tuple[int, int, int]]) -> Iterator[Callable[[], int]]:
        """The reference blocklist program (lab.bpf.c's xdp_ref_blocklist) on the server end,
        its hash table holding the flood's sources: the elements' own addresses and, for a
        network, the one address of it that the flood sends from."""
        addresses = sorted({net | (1 if plen < 32 else 0) for _, net, plen in v4})
        self.ref = libbpf.BpfObject(lab_object_path())
        self.ref.set_max_entries("ref_v4", max(len(addresses), 1))
        self.ref.load()
        n = len(addresses)
        keys = array("I")
        keys.frombytes(b"".join(a.to_bytes(4, "big") for a in addresses))
        values = (ctypes.c_uint8 * n)()
        libbpf.map_update_batch_raw(self.ref.map_fd("ref_v4"), (ctypes.c_uint32 * n).from_buffer(keys), values,
                                    4, 1, n)
        with self._counting(self.ref, "xdp_ref_blocklist") as read:
            yield read

    @contextlib.contextmanager
    def _counting(self, obj: libbpf.BpfObject, prog: str) -> Iterator[Callable[[], int]]:
        """A lab program that counts its drops in its object's `dropped`, attached natively
        to the server end; yields the count's reader."""
        with netns.enter(self.lab.server_ns):
            link = libbpf.link_create(obj.prog_fd(prog), self.server_ifindex, libbpf.BPF_XDP,
                                      libbpf.XDP_FLAGS_DRV_MODE)
        fd, ncpu = obj.map_fd("dropped"), libbpf.num_possible_cpus()

        def read() -> int:
            values = (ctypes.c_uint64 * ncpu)()
            libbpf.map_lookup(fd, ctypes.c_uint32(0), values)
            return sum(values)

        try:
            yield read
        finally:
            os.close(link)

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
            with self._counting(self.obj, "xdp_drop_count") as read:
                yield read
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


@dataclass
class Rounds:
    """How each flood is sent: at `rate` frames a second, `seconds` a round, `rounds` rounds."""

    rate: float
    seconds: float
    rounds: int
    saturation_packets: int = 0  # with live frames: the most one saturation run sends (0: none)

    @property
    def count(self) -> int:
        return max(1000, int(self.rate * self.seconds))


Setup = Callable[[Flood, str], contextlib.AbstractContextManager]


def flood_each(title: str, names: tuple[str, ...], setup: Setup, plan: Rounds, progress: Callable[[str], None],
               sources: list[int] | None = None, live_program: str = "xdp_flood", mtu: int | None = None) -> dict:
    """Every firewall of `names` in a lab of its own (of MTU mtu), set up by setup(flood,
    name), then plan.rounds interleaved rounds; the rows of their medians, and those
    skipped and why."""
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        clock = NetRxClock()
        stack.callback(clock.close)
        ready: dict[str, tuple[Flood, Callable[[], int]]] = {}
        for k, name in enumerate(names):
            progress(f"flood {title}: setting up {name}")
            try:
                lab = stack.enter_context(Lab(f"fl{k}", mtu=mtu))
                flood = Flood(lab, clock)
                stack.callback(flood.close)
                if sources:
                    flood.use_sources(sources)
                ready[name] = (flood, stack.enter_context(setup(flood, name)))
            except Exception as exc:  # a peer missing or refusing: the others are still measured
                skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                progress(f"flood {title}: {name} skipped: {skipped[name]}")
        samples: dict[str, list[Sample]] = {name: [] for name in ready}
        order = list(ready)
        for flood, dropped in ready.values():  # warm caches, tables and NAPI
            flood.sample(dropped, max(1000, plan.count // 10), plan.rate)
        for r in range(plan.rounds):
            progress(f"flood {title}: round {r + 1} of {plan.rounds}")
            for name in order[r % len(order):] + order[: r % len(order)]:
                flood, dropped = ready[name]
                samples[name].append(flood.sample(dropped, plan.count, plan.rate))
        for name in order:
            rows.append({"variant": name, **_summary(samples[name], plan)})
            if plan.saturation_packets:
                flood, dropped = ready[name]
                rows[-1]["saturation_pps"] = flood.saturation(dropped, plan.saturation_packets, 3, 1.0, live_program)
    _ratios(rows)
    return {"rows": rows, **({"skipped": skipped} if skipped else {})}


def _summary(samples: list[Sample], plan: Rounds) -> dict:
    """Medians of the rounds, with the spread of the per-packet figures."""
    progs = [s.prog_ns for s in samples if s.prog_ns is not None]
    out = {"offered_pps": plan.rate, "pps": statistics.median([s.dropped / s.seconds for s in samples]),
           "packets": sum(s.packets for s in samples), "dropped": sum(s.dropped for s in samples),
           "softirq_ns": statistics.median([s.softirq_ns for s in samples]),
           "softirq_spread_ns": [min(s.softirq_ns for s in samples), max(s.softirq_ns for s in samples)],
           "softirq_tick_ns": statistics.median([s.softirq_tick_ns for s in samples]),
           "prog_ns": statistics.median(progs) if progs else None}
    if progs:
        out["prog_spread_ns"] = [min(progs), max(progs)]
    return out


def measure(rule_counts: list[int], plan: Rounds, workdir: str, progress: Callable[[str], None],
            blocklist_size: int = 0) -> dict:
    """The service-rule floods (rule_counts), and with blocklist_size the floods from a
    blocklist's addresses: that many elements, and xdp-filter's 10,000 single addresses."""
    features = kfeatures.probe()
    if not features["live_frames"].available:
        plan.saturation_packets = 0
    stats_fd = libbpf.enable_stats() if features["bpf_stats"].available else None
    try:
        rows = []
        for n in rule_counts:
            got = flood_each(f"{n} rules", VARIANTS, lambda flood, name, n=n: flood.variant(name, n, workdir),
                         plan, progress)
            rows += [{**r, "rules": n} for r in got["rows"]]
            for name, why in got.get("skipped", {}).items():
                rows.append({"variant": name, "rules": n, "skipped": why})
        out = {"rows": rows, "offered_pps": plan.rate, "seconds_per_round": plan.seconds, "rounds": plan.rounds,
               "sender": "an AF_PACKET ring on CPU 0, handed to CPU 1 through a cpumap",
               "bpf_stats": stats_fd is not None, "live_frames": features["live_frames"].available}
        if blocklist_size:
            out["blocklist"] = _blocklist_flood(blocklist_size, plan, workdir, progress)
        return out
    finally:
        if stats_fd is not None:
            os.close(stats_fd)


def _blocklist_flood(size: int, plan: Rounds, workdir: str, progress: Callable[[str], None]) -> dict:
    ruleset = rulesets.blocklist_ruleset(random.Random(size), size)
    v4 = sorted(e for e in ruleset.cidr_sets["blocklist"].elements if e[0] == 4)
    # Each frame from an address of the list (an element's own, or one inside its network),
    # leaving out those the kernel drops as martians before iptables' INPUT could count them.
    sources = [a for a in (net | (1 if plen < 32 else 0) for _, net, plen in v4)
               if a >> 24 not in (0, 127) and a >> 24 < 224][:FLOOD_SOURCES]
    random.Random(1).shuffle(sources)
    got = flood_each(f"from a blocklist of {size}", BLOCKLIST_VARIANTS,
                 lambda flood, name: flood.blocklist_variant(name, ruleset, v4, workdir),
                 plan, progress, sources, "xdp_flood_sources")
    return {"size": size, "ipv4_elements": len(v4), "sources": len(sources), **got,
            "hosts": _hosts_flood(sources, plan, workdir, progress)}


def _hosts_flood(sources: list[int], plan: Rounds, workdir: str, progress: Callable[[str], None]) -> dict:
    """xdp-filter against bpfwall on a blocklist of single addresses as large as
    xdp-filter's table allows, the flood coming from those addresses."""
    skipped = xdp_filter_unavailable()
    if skipped:
        progress(f"flood from {XDP_FILTER_ADDRESSES} addresses: skipped, {skipped}")
        return {"skipped": skipped}
    hosts = [(4, a, 32) for a in sources[:XDP_FILTER_ADDRESSES]]
    ruleset = rulesets.ruleset_dropping(set(hosts))
    got = flood_each(f"from {len(hosts)} addresses", HOSTS_VARIANTS,
                 lambda flood, name: flood.blocklist_variant(name, ruleset, hosts, workdir),
                 plan, progress, sources[:XDP_FILTER_ADDRESSES], "xdp_flood_sources")
    return {"size": len(hosts), "sources": len(hosts), "limit": XDP_FILTER_ADDRESSES, **got}


def _ratios(rows: list[dict]) -> None:
    """Each row's per-packet figures as ratios to the trivial XDP_DROP's among them, and
    to the reference program's where it was measured ("ratio" None: nothing to divide by)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for base_name, suffix in (("xdp-drop", "ratio"), ("reference", "vs_reference")):
        base = next((r for r in rows if r["variant"] == base_name), None)
        if base is None:
            continue
        for r in rows:
            for key in ("softirq_ns", "prog_ns"):
                r[f"{key[:-3]}_{suffix}"] = ratio(r[key], base[key])
            if "saturation_pps" in r and base.get("saturation_pps"):
                r[f"saturation_{suffix}"] = r["saturation_pps"] / base["saturation_pps"]
