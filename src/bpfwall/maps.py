"""Every map of bpfwall's BPF objects in one place: where it lives, how long, who reads it.

The lists the rest of the code works from (what a generation pins, what the scope keeps
across applies, what a reader of the rule file's group may open) are derived from this
table, and tests/dataplane/test_btf.py checks it against the maps the compiled objects
declare, so a map added in C without a line here fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass

# Lifetimes: how long a map lives and where it is pinned.
GENERATION = "generation"  # loaded with each generation, per direction; gone with it
GENERATION_PINNED = "generation, pinned"  # the same, pinned in gen-N/<direction>/ for readers
GENERATION_SETS = "generation sets"  # per generation, shared by both directions, pinned in gen-N/
SCOPE = "scope"  # made by the first generation of a scope, pinned in it, shared by every later one
CONNTRACK = "conntrack"  # scope-level like SCOPE, but made and dropped with connection tracking
DISPATCHER = "dispatcher"  # the dispatcher's, pinned in <scope>/dispatch/


@dataclass(frozen=True)
class MapSpec:
    name: str
    lifetime: str
    sizing: str  # how its size is chosen, for people
    group_readable: bool = False  # a member of the rule file's `group:` may open it read-only


BPFWALL_MAPS = (
    MapSpec("class_of", GENERATION, "one class per value of the array fields (CLASS_SLOTS)"),
    MapSpec("bitvectors", GENERATION, "one per class; values of the summary and rule words"),
    MapSpec("dir_l1", GENERATION, "one per IPv4 /16, source then destination"),
    MapSpec("dir_chunks", GENERATION, "256 entries per chunk the IPv4 prefixes need"),
    MapSpec("src6", GENERATION, "the IPv6 source prefixes of the rules"),
    MapSpec("dst6", GENERATION, "the IPv6 destination prefixes of the rules"),
    MapSpec("iface_class", GENERATION, "the interfaces the rules name"),
    MapSpec("cgroup_class", GENERATION, "the cgroups the egress rules name that exist"),
    MapSpec("cgroup_wanted", GENERATION, "the paths of the cgroups the egress rules name"),
    MapSpec("user_class", GENERATION, "the uids the egress rules name"),
    MapSpec("connect_scope", GENERATION, "the namespace whose connect() and sendmsg() are judged"),
    MapSpec("local_addrs", GENERATION, "that namespace's own addresses (up to 1,024)"),
    MapSpec("rule_allow", GENERATION, "per CPU, one bit per rule"),
    MapSpec("lpm_scratch", GENERATION, "per CPU, one trie key"),
    MapSpec("set_search_scratch", GENERATION, "per CPU, a set search's keys and state"),
    MapSpec("rule_action", GENERATION, "one per rule"),
    MapSpec("rule_params", GENERATION, "one per rule with a limit or a ban"),
    MapSpec("limit_tat", GENERATION, "one bucket per limited rule, and the reject budget's"),
    MapSpec("source_tat", GENERATION, "per-source buckets (LRU), tiny unless a rule limits per source"),
    MapSpec("syn_ports", GENERATION, "the ports SYN cookies guard"),
    MapSpec("iface_slot", GENERATION, "one per ifindex: counter block and flags"),
    MapSpec("never_ban", GENERATION, "never_ban's literal prefixes"),
    MapSpec("counters", GENERATION_PINNED, "per CPU, N_COUNTERS per interface block", group_readable=True),
    MapSpec("log_state", GENERATION_PINNED, "one log limit per rule", group_readable=True),
    MapSpec("log_lost", GENERATION_PINNED, "per CPU, records the ring had no room for", group_readable=True),
    MapSpec("drop_stats_until", GENERATION_PINNED, "the lease `bpfwall top` holds"),
    MapSpec("drop_ports", GENERATION_PINNED, "dropped packets by port, while top watches"),
    MapSpec("drop_sources", GENERATION_PINNED, "dropped packets by source, while top watches"),
    MapSpec("set4", GENERATION_SETS, "the IPv4 elements of every CIDR set (a cap, allocated per element)"),
    MapSpec("set6", GENERATION_SETS, "the IPv6 elements of every CIDR set (a cap, allocated per element)"),
    MapSpec("host4", GENERATION_SETS, "the IPv4 addresses (/32) of every CIDR set, one entry each, found by probing"),
    MapSpec("host6", GENERATION_SETS, "the IPv6 addresses (/128) of every CIDR set, one entry each, found by probing"),
    MapSpec("set_version", GENERATION_SETS, "per set, its version in force (the trie copy) and hash seed"),
    MapSpec("log_ring", SCOPE, "the packet log's ring buffer"),
    MapSpec("bans", SCOPE, "bans by rules (LRU), tiny until a rule bans"),
    MapSpec("scan_bans", SCOPE, "bans for port scans (LRU), tiny unless port_scan is on"),
    MapSpec("scan_sources", SCOPE, "the port-scan watch (LRU), tiny unless port_scan is on"),
    MapSpec("test_clock", SCOPE, "the clock tests may set"),
    MapSpec("conntrack", CONNTRACK, "conntrack.max_entries (LRU)", group_readable=True),
    MapSpec("ct_stats", CONNTRACK, "per CPU, the table's counters", group_readable=True),
)

DISPATCH_MAPS = (
    MapSpec("abi", DISPATCHER, "one: the version of the dispatcher (dispatcher.ABI)"),
    MapSpec("active", DISPATCHER, "one: the generation in force"),
    MapSpec("ingress_gens", DISPATCHER, "two program slots, by generation parity"),
    MapSpec("egress_gens", DISPATCHER, "two program slots, by generation parity"),
    MapSpec("connect4_gens", DISPATCHER, "two program slots, by generation parity"),
    MapSpec("connect6_gens", DISPATCHER, "two program slots, by generation parity"),
    MapSpec("sendmsg4_gens", DISPATCHER, "two program slots, by generation parity"),
    MapSpec("sendmsg6_gens", DISPATCHER, "two program slots, by generation parity"),
)


def names(*lifetimes: str, readable: bool | None = None) -> tuple[str, ...]:
    """The bpfwall object's maps of these lifetimes (and group-readable, when asked)."""
    return tuple(m.name for m in BPFWALL_MAPS if m.lifetime in lifetimes
                 and (readable is None or m.group_readable == readable))


# What a generation pins per direction; what it shares between directions; what the
# scope keeps across generations; and what a reader of the rule file's group opens.
PINNED_MAPS = names(GENERATION_PINNED)
SET_MAPS = names(GENERATION_SETS)
SCOPE_MAPS = names(SCOPE)
CT_MAPS = names(CONNTRACK)
READ_GENERATION = names(GENERATION_PINNED, readable=True)
READ_SCOPE = names(SCOPE, CONNTRACK, readable=True)
