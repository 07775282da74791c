"""Per-packet cost under BPF_PROG_TEST_RUN: rule counts and set sizes, beside a trivial XDP_DROP.

Packets go in through a dispatcher, as on an interface (a link runs the dispatcher, which
jumps to the generation in force); the dispatcher's own cost is measured once as well.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
from collections.abc import Callable, Iterator

from scapy.all import IP, TCP, UDP, Ether

from .. import config, libbpf, scope, setmaps
from ..compiler import compile_ruleset
from ..dispatcher import Dispatcher
from ..generation import Generation
from ..lab import lab_object_path
from ..ruleset import Ruleset
from . import rulesets

E = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")


def ns_per_packet(prog_fd: int, frame: bytes, repeat: int, trials: int) -> float:
    libbpf.test_run_xdp(prog_fd, frame, 0, repeat)  # warm up: caches, and the CPU's clock
    return statistics.median(libbpf.test_run_xdp(prog_fd, frame, 0, repeat)[3] for _ in range(trials))


def baseline(repeat: int, trials: int) -> float:
    frame = bytes(E / IP(src="10.0.0.5", dst="10.200.0.1") / UDP(dport=9))
    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        return ns_per_packet(obj.prog_fd("xdp_drop_all"), frame, repeat, trials)


def rule_probes(n: int) -> dict[str, bytes]:
    """The packets of the rule benchmark (see rulesets.service_rules): first, last, none."""
    last = n - 1
    return {
        "first": bytes(E / IP(src="10.0.0.5", dst="10.200.0.1") / TCP(dport=1000, flags="S")),
        "last": bytes(E / IP(src=rulesets.rule_source(last), dst="10.200.0.1") /
                      TCP(dport=1000 + last, flags="S")),
        # The source matches rule 0 and the port the last rule: every field has
        # candidates, the AND is empty; the worst packet.
        "none": bytes(E / IP(src="10.0.0.5", dst="10.200.0.1") / TCP(dport=1000 + last, flags="S")
                      if n > 1 else E / IP(src="10.9.9.9", dst="10.200.0.1") / TCP(dport=1000, flags="S")),
    }


def set_probes(ruleset: Ruleset) -> dict[str, bytes]:
    """A source in the set (matches the first rule), and one outside it (matches none)."""
    family, net, plen = next(iter(sorted(ruleset.cidr_sets["blocklist"].elements)))
    inside = ".".join(str(b) for b in (net | 1).to_bytes(4, "big")) if plen < 32 else \
        ".".join(str(b) for b in net.to_bytes(4, "big"))
    return {
        "first": bytes(E / IP(src=inside, dst="10.200.0.1") / TCP(dport=80, flags="S")),
        "none": bytes(E / IP(src="10.200.7.7", dst="10.200.0.1") / TCP(dport=8080, flags="S")),
    }


def loaded(ruleset: Ruleset) -> Generation:
    gen = Generation.load(compile_ruleset(ruleset))
    setmaps.fill(gen.set_fds(), ruleset.cidr_sets, ruleset.set_slots())
    return gen


@contextlib.contextmanager
def dispatcher() -> Iterator[Callable[[Generation], int]]:
    """A dispatcher of the bench's own (pinned under PIN_ROOT, removed after); the callable
    puts a generation in force and returns the dispatcher's program to run packets through."""
    scope.ensure_bpffs()
    directory = os.path.join(scope.PIN_ROOT, f"bench-{os.getpid()}")
    generation = 0
    try:
        with Dispatcher.create(directory) as disp:
            def through(gen: Generation) -> int:
                nonlocal generation
                generation += 1
                disp.stage("ingress", generation, gen.prog_fd)
                disp.flip(generation)
                return disp.prog_fd("ingress")

            yield through
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(scope.PIN_ROOT)  # only if no firewall is pinned


def measure(rule_counts: list[int], set_sizes: list[int], repeat: int, trials: int,
            progress: Callable[[str], None]) -> dict:
    base = baseline(repeat, trials)
    rows = []
    overhead = None
    with dispatcher() as through:
        for n in rule_counts:
            progress(f"per packet: {n} rules")
            with loaded(config.loads(rulesets.service_rules(n), f"{n}-rules")) as gen:
                prog = through(gen)
                for what, frame in rule_probes(n).items():
                    ns = ns_per_packet(prog, frame, repeat, trials)
                    rows.append({"kind": "rules", "size": n, "packet": what, "ns": ns, "ratio": ns / base})
                    if overhead is None:  # the dispatcher's share: the same packet, run directly
                        overhead = ns - ns_per_packet(gen.prog_fd, frame, repeat, trials)
        for size in set_sizes:
            progress(f"per packet: a set of {size} prefixes")
            ruleset = rulesets.blocklist_ruleset(random.Random(size), size)
            with loaded(ruleset) as gen:
                prog = through(gen)
                for what, frame in set_probes(ruleset).items():
                    ns = ns_per_packet(prog, frame, repeat, trials)
                    rows.append({"kind": "set", "size": size, "packet": what, "ns": ns, "ratio": ns / base})
    return {"baseline_xdp_drop_ns": base, "dispatcher_ns": overhead, "rows": rows}
