"""Python twins of bpf/shared.h: constants and ctypes structs.

tests/unit/test_shared.py checks the constants against the header and
tests/dataplane/test_btf.py checks each struct against the compiled object's BTF.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import Structure, c_uint8, c_uint16, c_uint32, c_uint64

MAX_RULES = 16384
MAX_WORDS = MAX_RULES // 64
MAX_SUMMARY = MAX_WORDS // 64
NO_RULE = 0xFFFFFFFF

F_IFACE, F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, F_TCPFLAGS, F_ICMP, F_CT, F_CGROUP, F_USER = range(11)
TRIES = ("src4", "src6", "dst4", "dst6")  # bit order of Config.trie_root_only
N_FIELDS = 11
CGROUP_MAX_LEVEL = 31
CGROUP_PATH_MAX = 256

PROTO_SLOTS = 512
PORT_SLOTS = 65537
PORT_ABSENT = 65536
TCPFLAGS_SLOTS = 257
TCPFLAGS_ABSENT = 256
ICMP_SLOTS = 131073
ICMP_ABSENT = 131072
CT_SLOTS = 4

PROTO_BASE = 0
SPORT_BASE = PROTO_BASE + PROTO_SLOTS
DPORT_BASE = SPORT_BASE + PORT_SLOTS
TCPFLAGS_BASE = DPORT_BASE + PORT_SLOTS
ICMP_BASE = TCPFLAGS_BASE + TCPFLAGS_SLOTS
CT_BASE = ICMP_BASE + ICMP_SLOTS
CLASS_SLOTS = CT_BASE + CT_SLOTS

CT_NEW, CT_ESTABLISHED, CT_RELATED, CT_INVALID = range(4)
CT_STATES = {"new": CT_NEW, "established": CT_ESTABLISHED, "related": CT_RELATED, "invalid": CT_INVALID}
CT_STATE_NAMES = {v: k for k, v in CT_STATES.items()}
TCP_OTHER, TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED, TCP_FIN, TCP_TIME_WAIT, TCP_CLOSE = range(7)
TCP_STATE_NAMES = ["-", "syn_sent", "syn_recv", "established", "fin_wait", "time_wait", "close"]
CTF_ORIG_LO, CTF_SEEN_REPLY, CTF_FIN_ORIG, CTF_FIN_REPLY = 1, 2, 4, 8
CTS_CREATED, CTS_INVALID, CTS_N = 0, 1, 2
DIRECTIONS = {"ingress": 0, "egress": 1}

ACT_ACCEPT, ACT_DROP, ACT_REJECT, ACT_BAN = 0, 1, 2, 3
ACT_SYNCOOKIE = 4  # judge()'s verdict for a SYN answered with a cookie; never a rule's action
ACTIONS = {"accept": ACT_ACCEPT, "drop": ACT_DROP, "reject": ACT_REJECT, "ban": ACT_BAN}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}
ACTION_MASK = 0xFF
PARAM_SHIFT = 8  # rule_action: action | (1 + index into rule_params) << PARAM_SHIFT
MAX_PARAMS = 64
MAX_NEVER_BAN_SETS = 4  # sets named in never_ban
REJECT_BUDGET = MAX_PARAMS  # limit_tat slot and source_tat param of the reject answer budget

IFACE_BLOCK_MASK = 0xFFFF  # iface_slot: the counter block, and flags
IFACE_ANSWER_REDIRECT = 0x10000

CNT_POLICY_INGRESS = MAX_RULES
CNT_POLICY_EGRESS = MAX_RULES + 1
CNT_MALFORMED = MAX_RULES + 2
CNT_NOT_IP = MAX_RULES + 3
CNT_REJECT_SENT = MAX_RULES + 4
CNT_REJECT_FAILED = MAX_RULES + 5
CNT_BANNED = MAX_RULES + 6
CNT_BANS_ADDED = MAX_RULES + 7
CNT_SCAN_BANS = MAX_RULES + 8
CNT_SYNCOOKIE_SENT = MAX_RULES + 9
CNT_SYNCOOKIE_FAILED = MAX_RULES + 10
CNT_REJECT_SUPPRESSED = MAX_RULES + 11
N_COUNTERS = MAX_RULES + 12

BY_RULE, BY_POLICY, BY_MALFORMED, BY_NOT_IP, BY_BAN = range(5)
# What decided a packet (enum bpfwall_decision), as explain, tests and the reference model name it.
DECISIONS = {BY_RULE: "rule", BY_POLICY: "policy", BY_MALFORMED: "malformed", BY_NOT_IP: "not_ip",
             BY_BAN: "banned"}
# The keys of `stats --json`'s "drops" and the exporter's bpfwall_drops{reason}.
DROP_REASONS = ("rule", "policy", "malformed", "banned")
BANNED_RULE = 0xFFFFFFFE

LIMIT_ON, LIMIT_PER_SOURCE, LIMIT_BYTES, LIMIT_OVER = 1, 2, 4, 8
MAX_SYN_PORTS = 64
SOURCE_BUCKETS = 65536
MAX_BANS = 65536
SCAN_SOURCES = 65536
BAN_RULE, BAN_SCAN = 0, 1
BAN_REASONS = {BAN_RULE: "rule", BAN_SCAN: "port-scan"}

# XDP verdicts
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
XDP_VERDICTS = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}


class CtTimeouts(Structure):
    """Idle timeouts in seconds; the rule file's conntrack.timeouts keys are these names."""

    _fields_ = [
        ("tcp_syn", c_uint32),
        ("tcp_established", c_uint32),
        ("tcp_fin", c_uint32),
        ("tcp_close", c_uint32),
        ("udp", c_uint32),
        ("udp_stream", c_uint32),
        ("icmp", c_uint32),
        ("generic", c_uint32),
    ]


# nf_conntrack's defaults
CT_TIMEOUT_DEFAULTS = {
    "tcp_syn": 120, "tcp_established": 432000, "tcp_fin": 120, "tcp_close": 10,
    "udp": 30, "udp_stream": 120, "icmp": 30, "generic": 600,
}
CT_MAX_ENTRIES_DEFAULT = 262144

# The budget of reject answers: the kernel's own ICMP limits (icmp_msgs_per_sec 1000 and
# icmp_msgs_burst 50 for all destinations; icmp_ratelimit, one a second with a burst of six,
# for each). count answers per period seconds, with a burst.
REJECT_BUDGET_DEFAULT = {"count": 1000, "period": 1, "burst": 50,
                         "source_count": 1, "source_period": 1, "source_burst": 6}


DIR_L1_SLOTS = 2 * 65536  # src, then dst: one entry per IPv4 /16
DIR_CHUNK = 1 << 31  # an entry that names a chunk of 256, not a class
DIR_MAX_CHUNKS = 1 << 20
MAX_SETS = 64
MAX_FIELD_SETS = 4


class SetRef(Structure):
    _fields_ = [("slot", c_uint32), ("cls", c_uint32)]


class Set4Key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("key_slot", c_uint32), ("addr", c_uint8 * 4)]


class Set6Key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("key_slot", c_uint32), ("addr", c_uint8 * 16)]


class Host4Entry(Structure):
    _fields_ = [("tag", c_uint32), ("addr", c_uint32), ("since", c_uint32), ("until", c_uint32)]


class Host6Entry(Structure):
    _fields_ = [("tag", c_uint32), ("addr", c_uint32 * 4), ("since", c_uint32), ("until", c_uint32)]


class SetState(Structure):
    _fields_ = [("version", c_uint32), ("seed", c_uint32), ("lengths4", c_uint32), ("tries", c_uint32)]


SET_TRIE4 = 1
SET_TRIE6 = 2


def host_tag(slot: int, plen: int) -> int:
    """BPFWALL_HOST_TAG: a host entry's set and prefix length."""
    return (slot + 1) | plen << 8


HOST_PROBES = 32
HOST_MIX = 0x9E3779B1
HOST_SLOT = 0x01000193
HOST_FOREVER = 0xFFFFFFFF


MAX_IFACES = 8  # counter blocks: 0 for other interfaces, 1.. for the protected ones
IFINDEX_SLOTS = 4096
LOG_RING_BYTES = 1 << 20
DROP_SOURCES = 4096
DROP_SOURCE_SAMPLE = 16


class DropSource(Structure):
    _fields_ = [("addr", c_uint8 * 16), ("is_ipv6", c_uint8), ("pad", c_uint8 * 3)]


class LogState(Structure):
    _fields_ = [("interval_ns", c_uint64), ("burst_ns", c_uint64), ("tat", c_uint64), ("suppressed", c_uint64)]


class LogRecord(Structure):
    # In the object's BTF through log.h's log_record_layout (ring buffer memory alone would
    # leave it out); tests/dataplane/test_log.py also reads real records field by field.
    _fields_ = [
        ("time_ns", c_uint64), ("generation", c_uint32), ("rule", c_uint32), ("ifindex", c_uint32),
        ("len", c_uint32), ("direction", c_uint8), ("action", c_uint8), ("is_ipv6", c_uint8),
        ("proto", c_uint8), ("has_l4", c_uint8), ("tcp_flags", c_uint8), ("icmp_type", c_uint8),
        ("icmp_code", c_uint8), ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
        ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16),
    ]


class RuleParam(Structure):
    _fields_ = [
        ("period_ns", c_uint64), ("tolerance_ns", c_uint64), ("ban_ns", c_uint64),
        ("rate", c_uint32), ("flags", c_uint32), ("rule", c_uint32), ("pad", c_uint32),
    ]


class Source(Structure):
    """A banned or rate-limited source: an IPv4 address or the /64 of an IPv6 one."""

    _fields_ = [("addr", c_uint8 * 16), ("is_ipv6", c_uint8), ("pad", c_uint8 * 3)]


class BucketKey(Structure):
    _fields_ = [("src", Source), ("param", c_uint32)]


class Ban(Structure):
    _fields_ = [
        ("since_ns", c_uint64), ("expires_ns", c_uint64), ("reason", c_uint32),
        ("generation", c_uint32), ("rule", c_uint32), ("pad", c_uint32),
    ]


class ScanState(Structure):
    _fields_ = [("window_start_ns", c_uint64), ("seen", c_uint64 * 4), ("ports", c_uint32), ("pad", c_uint32)]


class Config(Structure):
    _fields_ = [
        ("fields", c_uint32),
        ("n_words", c_uint32),
        ("n_summary", c_uint32),
        ("policy_ingress", c_uint32),
        ("policy_egress", c_uint32),
        ("iface_default_class", c_uint32),
        ("trie_root_only", c_uint32),
        ("root_class", c_uint32 * 4),
        ("direction", c_uint32),
        ("ct_enabled", c_uint32),
        ("ct_timeouts", CtTimeouts),
        ("n_src_sets", c_uint32),
        ("n_dst_sets", c_uint32),
        ("log_enabled", c_uint32),
        ("n_params", c_uint32),
        ("bans_enabled", c_uint32),
        ("scan_ports", c_uint32),
        ("scan_window_ns", c_uint64),
        ("scan_ban_ns", c_uint64),
        ("syn_period_ns", c_uint64),
        ("syn_tolerance_ns", c_uint64),
        ("syn_rate", c_uint32),
        ("pad1", c_uint32),
        ("reject_cost_ns", c_uint64),
        ("reject_tolerance_ns", c_uint64),
        ("reject_source_cost_ns", c_uint64),
        ("reject_source_tolerance_ns", c_uint64),
        ("never_ban_literals", c_uint32),
        ("n_never_ban_sets", c_uint32),
        ("never_ban_slots", c_uint32 * MAX_NEVER_BAN_SETS),
        ("src_sets", SetRef * MAX_FIELD_SETS),
        ("dst_sets", SetRef * MAX_FIELD_SETS),
        ("n_blocklists", c_uint32),
        ("blocklist_sets", c_uint32 * MAX_FIELD_SETS),
        ("cgroup_levels", c_uint32),
        ("cgroup_default_class", c_uint32),
        ("user_default_class", c_uint32),
        ("connect_unsure", c_uint32 * 2),  # AT_CONNECT_TCP, AT_CONNECT_UDP
    ]


AT_CONNECT_TCP, AT_CONNECT_UDP = 0, 1


class ConnectScope(Structure):
    _fields_ = [("netns_cookie", c_uint64)]


class Addr16(Structure):
    _fields_ = [("addr", c_uint8 * 16)]


class Lpm6Key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("addr", c_uint8 * 16)]


class Counter(Structure):
    _fields_ = [("packets", c_uint64), ("bytes", c_uint64)]


# A test run of bpfwall_egress asks through its skb's cb[] (see shared.h).
RUN_MAGIC = 0x62776F77
RUN_NO_SOCKET = 1
RUN_EXPLAIN = 2
RUN_REQUEST = 0x80000000
_SKB_IFINDEX_OFFSET = 40  # struct __sk_buff: ten u32 fields, then ifindex, tc_index, cb[5]
_SKB_CB_OFFSET = 48


def skb_run_ctx(uid: int | None, explain: bool = False, ifindex: int = 0) -> bytes:
    """The struct __sk_buff head for a test run of bpfwall_egress whose socket is owned by
    uid (the caller's cgroup is the socket's), or, with None, a packet without a socket.
    explain: judged quietly, its decision returned in cb[] (explained_skb reads it);
    ifindex: the device it leaves by (0: loopback)."""
    flags = (RUN_NO_SOCKET if uid is None else 0) | (RUN_EXPLAIN if explain else 0)
    head = bytearray(_SKB_CB_OFFSET)
    struct.pack_into("<I", head, _SKB_IFINDEX_OFFSET, ifindex)
    return bytes(head) + struct.pack("<5I", RUN_MAGIC, uid or 0, flags, NO_RULE, 0)


def explained_skb(ctx_out: bytes) -> Explain:
    """What an explained test run of bpfwall_egress wrote back into cb[3] and cb[4]."""
    rule, packed = struct.unpack_from("<2I", ctx_out, _SKB_CB_OFFSET + 12)
    return Explain(magic=RUN_MAGIC, rule=rule, decision=packed >> 16, action=packed & 0xFFFF)


class CgroupPath(Structure):
    """struct bpfwall_cgroup_path: the key of cgroup_wanted."""

    _fields_ = [("path", ctypes.c_char * CGROUP_PATH_MAX)]

    @classmethod
    def of(cls, path: str) -> CgroupPath:
        """The key for a path relative to the cgroup2 mount, as the tracepoints spell it."""
        return cls(("/" + path).encode())


EXPLAIN_MAGIC = 0x6277666C
TRACE_MAGIC = 0x62776674


class Explain(Structure):
    _fields_ = [
        ("magic", c_uint32),
        ("rule", c_uint32),
        ("decision", c_uint32),
        ("action", c_uint32),
    ]


class CtKey(Structure):
    _fields_ = [
        ("addr_lo", c_uint8 * 16),
        ("addr_hi", c_uint8 * 16),
        ("port_lo", c_uint16),
        ("port_hi", c_uint16),
        ("proto", c_uint8),
        ("is_ipv6", c_uint8),
        ("pad", c_uint8 * 2),
    ]


class CtEntry(Structure):
    _fields_ = [
        ("created_ns", c_uint64),
        ("last_seen_ns", c_uint64),
        ("packets", c_uint64 * 2),
        ("bytes", c_uint64 * 2),
        ("tcp_state", c_uint8),
        ("flags", c_uint8),
        ("pad", c_uint8 * 6),
    ]


# C struct name -> ctypes twin, for the BTF test.
STRUCTS: dict[str, type[Structure]] = {
    "bpfwall_config": Config,
    "bpfwall_lpm6_key": Lpm6Key,
    "bpfwall_connect_scope": ConnectScope,
    "bpfwall_addr16": Addr16,
    "bpfwall_counter": Counter,
    "bpfwall_explain": Explain,
    "bpfwall_ct_key": CtKey,
    "bpfwall_ct_entry": CtEntry,
    "bpfwall_ct_timeouts": CtTimeouts,
    "bpfwall_set_ref": SetRef,
    "bpfwall_log_state": LogState,
    "bpfwall_log_record": LogRecord,
    "bpfwall_drop_source": DropSource,
    "bpfwall_set4_key": Set4Key,
    "bpfwall_set6_key": Set6Key,
    "bpfwall_host4_entry": Host4Entry,
    "bpfwall_host6_entry": Host6Entry,
    "bpfwall_set_state": SetState,
    "bpfwall_rule_param": RuleParam,
    "bpfwall_source": Source,
    "bpfwall_bucket_key": BucketKey,
    "bpfwall_ban": Ban,
    "bpfwall_scan_state": ScanState,
    "bpfwall_cgroup_path": CgroupPath,
}
