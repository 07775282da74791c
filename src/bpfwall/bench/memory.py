"""Memory of the maps of one generation: N rules plus a set of M prefixes, as the kernel counts it."""

from __future__ import annotations

import random

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


def generation_bytes(gen: Generation) -> dict[str, int]:
    return {name: map_memlock(fd) for name, fd in gen.map_fds.items()}


def measure(n_rules: int, set_size: int) -> dict:
    rules = config.loads(rulesets.service_rules(n_rules), "rules")
    blocklist = rulesets.blocklist_ruleset(random.Random(1), set_size)
    # One rule set with both: the service rules, then the blocklist rule before them.
    rules.rules = blocklist.rules[:1] + rules.rules
    rules.sets, rules.cidr_sets = blocklist.sets, blocklist.cidr_sets
    with loaded(rules) as gen:
        per_map = generation_bytes(gen)
    compiled = compile_ruleset(rules)
    return {"rules": n_rules, "set_size": set_size, "classes": compiled.n_classes,
            "bytes_per_map": per_map, "total_bytes": sum(per_map.values())}
