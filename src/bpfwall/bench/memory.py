"""Memory of one generation, N rules plus a set of M prefixes: its maps as the kernel charges
them, and the kernel memory it grows by beside nftables holding the same rules and set."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time

from .. import config
from ..compiler import compile_ruleset
from ..generation import Generation
from . import rulesets
from .pktcost import loaded


def map_memlock(fd: int) -> int:
    """Bytes the kernel charges a map (the memlock line of its fdinfo)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


def kernel_bytes() -> int:
    """Unreclaimable slab plus vmalloc in use, machine-wide (/proc/meminfo): what tables
    really take, allocator rounding and a trie's inner nodes included, which a map's own
    accounting leaves out. Read after a pause, so that memory freed by RCU is back."""
    time.sleep(1.0)
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
    return fields["SUnreclaim"] + fields["VmallocUsed"]


def nft_kernel_bytes(text: str) -> int:
    """How much kernel memory nftables grows by holding ruleset `text`, loaded in a network
    namespace of its own (removed after)."""
    ns = f"bpfwall-mem-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(text)
            f.flush()
            before = kernel_bytes()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", f.name], check=True, capture_output=True)
            return kernel_bytes() - before
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def generation_bytes(gen: Generation) -> dict[str, int]:
    return {name: map_memlock(fd) for name, fd in gen.map_fds.items()}


def measure(n_rules: int, set_size: int) -> dict:
    rules = config.loads(rulesets.service_rules(n_rules), "rules")
    blocklist = rulesets.blocklist_ruleset(random.Random(1), set_size)
    # One rule set with both: the service rules, then the blocklist rule before them.
    rules.rules = blocklist.rules[:1] + rules.rules
    rules.sets, rules.cidr_sets = blocklist.sets, blocklist.cidr_sets
    before = kernel_bytes()
    with loaded(rules) as gen:
        grown = kernel_bytes() - before
        per_map = generation_bytes(gen)
    compiled = compile_ruleset(rules)
    elements = blocklist.cidr_sets["blocklist"].elements
    nft = nft_kernel_bytes(rulesets.nft_with_blocklist(n_rules, elements))
    return {"rules": n_rules, "set_size": set_size, "classes": compiled.n_classes,
            "bytes_per_map": per_map, "total_bytes": sum(per_map.values()),
            "kernel_bytes": {"bpfwall": grown, "nft": nft}}
