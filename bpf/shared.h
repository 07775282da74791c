/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every struct and constant that the Python control plane also sees.
 * Each struct here has a ctypes twin in src/bpfwall/shared.py; a test reads
 * the BTF of the compiled object and fails if sizes or offsets differ.
 */
#ifndef BPFWALL_SHARED_H
#define BPFWALL_SHARED_H

#include <linux/types.h>

/* Rules, implicit ones included. A multiple of 64 * 64 so that the summary
 * bitvector (one bit per 64-rule word) fills whole words. */
#define BPFWALL_MAX_RULES   16384
#define BPFWALL_MAX_WORDS   (BPFWALL_MAX_RULES / 64)
#define BPFWALL_MAX_SUMMARY (BPFWALL_MAX_WORDS / 64)
#define BPFWALL_NO_RULE	    0xffffffffu

/* IPv4 addresses map to their class through direct-indexed tables
 * (DIR-16-8-8): one entry per /16 (src, then dst), each a class or
 * DIR_CHUNK | n for chunk n of 256 entries, one level per further byte. */
#define BPFWALL_DIR_L1_SLOTS (2 * 65536)
#define BPFWALL_DIR_CHUNK    0x80000000u

/* CIDR sets: at most MAX_SETS in a rule file, at most MAX_FIELD_SETS named by
 * the rules of one direction in one address field. Each set has two copies
 * in the set tries (key slot * 2 + version) so a command that changes it
 * flips from the old contents to the new in one write. */
#define BPFWALL_MAX_SETS       64
#define BPFWALL_MAX_FIELD_SETS 4

/* Fields of the packet key; bit N of bpfwall_config.fields says whether
 * some rule constrains field N (unused fields are never looked up). */
enum bpfwall_field {
	BPFWALL_F_IFACE = 0,
	BPFWALL_F_PROTO = 1,
	BPFWALL_F_SRC = 2,
	BPFWALL_F_DST = 3,
	BPFWALL_F_SPORT = 4,
	BPFWALL_F_DPORT = 5,
	BPFWALL_F_TCPFLAGS = 6,
	BPFWALL_F_ICMP = 7,
	BPFWALL_F_CT = 8,
	BPFWALL_F_CGROUP = 9, /* egress: the sending socket's cgroup */
	BPFWALL_F_USER = 10,  /* egress: the sending socket's uid */
	BPFWALL_N_FIELDS = 11,
};

/* Levels below the cgroup2 root at which a rule may name a cgroup. */
#define BPFWALL_CGROUP_MAX_LEVEL 31

/*
 * A cgroup's path as the cgroup tracepoints give it ("/system.slice/x"),
 * NUL-padded to the key of cgroup_wanted: how a cgroup made after an apply
 * is recognised.
 */
#define BPFWALL_CGROUP_PATH_MAX 256
struct bpfwall_cgroup_path {
	char path[BPFWALL_CGROUP_PATH_MAX];
};

/*
 * The class_of array maps a field value to its class. Each array-indexed
 * field owns a slice of it; the last slot of a slice is the "absent" value
 * (no L4 header, a non-first fragment, or a protocol without that field),
 * which matches only rules that do not constrain the field.
 */
#define BPFWALL_PROTO_SLOTS	512   /* is_ipv6 * 256 + protocol number */
#define BPFWALL_PORT_SLOTS	65537 /* port, or 65536 = absent */
#define BPFWALL_PORT_ABSENT	65536
#define BPFWALL_TCPFLAGS_SLOTS	257 /* flag byte, or 256 = absent */
#define BPFWALL_TCPFLAGS_ABSENT 256
#define BPFWALL_ICMP_SLOTS	131073 /* is_ipv6 << 16 | type << 8 | code */
#define BPFWALL_ICMP_ABSENT	131072
#define BPFWALL_CT_SLOTS	4 /* enum bpfwall_ct_state */

#define BPFWALL_PROTO_BASE    0
#define BPFWALL_SPORT_BASE    (BPFWALL_PROTO_BASE + BPFWALL_PROTO_SLOTS)
#define BPFWALL_DPORT_BASE    (BPFWALL_SPORT_BASE + BPFWALL_PORT_SLOTS)
#define BPFWALL_TCPFLAGS_BASE (BPFWALL_DPORT_BASE + BPFWALL_PORT_SLOTS)
#define BPFWALL_ICMP_BASE     (BPFWALL_TCPFLAGS_BASE + BPFWALL_TCPFLAGS_SLOTS)
#define BPFWALL_CT_BASE	      (BPFWALL_ICMP_BASE + BPFWALL_ICMP_SLOTS)
#define BPFWALL_CLASS_SLOTS   (BPFWALL_CT_BASE + BPFWALL_CT_SLOTS)

enum bpfwall_action {
	BPFWALL_ACT_ACCEPT = 0,
	BPFWALL_ACT_DROP = 1,
	BPFWALL_ACT_REJECT = 2,
	BPFWALL_ACT_BAN = 3,	   /* drop, and ban the source for the rule's ban_ns */
	BPFWALL_ACT_SYNCOOKIE = 4, /* judge() only: accepted, answer with a cookie */
};

/* rule_action values: the action in the low byte; above it, 1 + the index of
 * the rule's entry in rule_params (its limit, its ban), or 0 for none. */
#define BPFWALL_ACTION_MASK 0xffu
#define BPFWALL_PARAM_SHIFT 8
#define BPFWALL_MAX_PARAMS  64 /* rules with a limit or a ban, per direction */
/* The slot of limit_tat, and the param of source_tat keys, that hold the
 * reject answer budget: one past the rules' own. */
#define BPFWALL_REJECT_BUDGET	   BPFWALL_MAX_PARAMS
#define BPFWALL_MAX_NEVER_BAN_SETS 4 /* sets named in never_ban */

/* iface_slot values: the interface's block of counters, and flags. */
#define BPFWALL_IFACE_BLOCK_MASK 0xffffu
/* Answers (rejects, SYN cookies) leave by a redirect to the interface itself,
 * not XDP_TX: on a veth only a redirect wakes the other end to take them. */
#define BPFWALL_IFACE_ANSWER_REDIRECT 0x10000u

/* Slots of the counters array after the per-rule ones. */
enum bpfwall_counter_slot {
	BPFWALL_CNT_POLICY_INGRESS = BPFWALL_MAX_RULES,
	BPFWALL_CNT_POLICY_EGRESS,
	BPFWALL_CNT_MALFORMED,
	BPFWALL_CNT_NOT_IP,	       /* ARP and other non-IP, always passed */
	BPFWALL_CNT_REJECT_SENT,       /* RST or ICMP error built and sent */
	BPFWALL_CNT_REJECT_FAILED,     /* reject asked but the packet was dropped */
	BPFWALL_CNT_BANNED,	       /* dropped before the rules: the source is banned */
	BPFWALL_CNT_BANS_ADDED,	       /* sources banned by an action ban rule */
	BPFWALL_CNT_SCAN_BANS,	       /* sources banned for scanning closed ports */
	BPFWALL_CNT_SYNCOOKIE_SENT,    /* SYN answered with a cookie from XDP */
	BPFWALL_CNT_SYNCOOKIE_FAILED,  /* cookie wanted but the SYN was dropped */
	BPFWALL_CNT_REJECT_SUPPRESSED, /* reject over the answer budget: dropped */
	BPFWALL_N_COUNTERS,
};

/* What decided a packet, as `explain` reads it back. */
enum bpfwall_decision {
	BPFWALL_BY_RULE = 0,
	BPFWALL_BY_POLICY = 1,
	BPFWALL_BY_MALFORMED = 2,
	BPFWALL_BY_NOT_IP = 3,
	BPFWALL_BY_BAN = 4, /* the source is banned */
};

/* pkt->rule of a packet dropped for a ban. */
#define BPFWALL_BANNED_RULE 0xfffffffeu

/* Connection state of a packet, as nftables' ct state. */
enum bpfwall_ct_state {
	BPFWALL_CT_NEW = 0,
	BPFWALL_CT_ESTABLISHED = 1,
	BPFWALL_CT_RELATED = 2,
	BPFWALL_CT_INVALID = 3,
};

/* TCP progress of a tracked flow (other protocols stay at OTHER). */
enum bpfwall_ct_tcp {
	BPFWALL_TCP_OTHER = 0,
	BPFWALL_TCP_SYN_SENT = 1,
	BPFWALL_TCP_SYN_RECV = 2,
	BPFWALL_TCP_ESTABLISHED = 3,
	BPFWALL_TCP_FIN = 4,	   /* one side sent FIN */
	BPFWALL_TCP_TIME_WAIT = 5, /* both sides sent FIN */
	BPFWALL_TCP_CLOSE = 6,	   /* RST seen */
};

enum bpfwall_ct_flag {
	BPFWALL_CTF_ORIG_LO = 1, /* the opener is the key's "lo" side */
	BPFWALL_CTF_SEEN_REPLY = 2,
	BPFWALL_CTF_FIN_ORIG = 4,
	BPFWALL_CTF_FIN_REPLY = 8,
};

/* Slots of the per-CPU ct_stats map, kept across generations. */
enum bpfwall_ct_stat {
	BPFWALL_CTS_CREATED = 0, /* entries inserted (not counting stale ones reused) */
	BPFWALL_CTS_INVALID = 1, /* packets judged invalid */
	BPFWALL_CTS_N = 2,
};

/* A flow in a direction-independent form: the (address, port) pairs are
 * ordered, "lo" first. ICMP echo puts its identifier on the requester's end. */
struct bpfwall_ct_key {
	__u8 addr_lo[16];
	__u8 addr_hi[16];
	__u16 port_lo;
	__u16 port_hi;
	__u8 proto;
	__u8 is_ipv6;
	__u8 pad[2];
};

struct bpfwall_ct_entry {
	__u64 created_ns; /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC_COARSE */
	__u64 last_seen_ns;
	__u64 packets[2]; /* [0] from the opener, [1] replies */
	__u64 bytes[2];
	__u8 tcp_state; /* enum bpfwall_ct_tcp */
	__u8 flags;	/* enum bpfwall_ct_flag */
	__u8 pad[6];
};

/* Idle timeouts, seconds. */
struct bpfwall_ct_timeouts {
	__u32 tcp_syn;
	__u32 tcp_established;
	__u32 tcp_fin;
	__u32 tcp_close;
	__u32 udp;
	__u32 udp_stream;
	__u32 icmp;
	__u32 generic;
};

/*
 * A rule's limit and ban. The limit is a GCRA: each packet (or byte) costs
 * period_ns / rate of virtual time; a packet conforms when, after paying, the
 * bucket's time runs at most tolerance_ns (the burst) ahead of now.
 */
enum bpfwall_limit_flag {
	BPFWALL_LIMIT_ON = 1,	      /* the rule has a limit */
	BPFWALL_LIMIT_PER_SOURCE = 2, /* a bucket per source (IPv4, IPv6 /64) */
	BPFWALL_LIMIT_BYTES = 4,      /* cost by bytes, not packets */
	BPFWALL_LIMIT_OVER = 8,	      /* match packets over the rate, not within */
};

struct bpfwall_rule_param {
	__u64 period_ns;    /* the rate is `rate` units per period_ns */
	__u64 tolerance_ns; /* burst * period_ns / rate */
	__u64 ban_ns;	    /* action ban: how long */
	__u32 rate;
	__u32 flags; /* enum bpfwall_limit_flag */
	__u32 rule;  /* the rule's index, for the ban record */
	__u32 pad;
};

/* Ports whose SYNs may be answered with cookies. */
#define BPFWALL_MAX_SYN_PORTS 64

/* Per-source buckets: one LRU table per generation. */
#define BPFWALL_SOURCE_BUCKETS 65536

/* A source address: IPv4, or the /64 of an IPv6 one (the rest zero). */
struct bpfwall_source {
	__u8 addr[16];
	__u8 is_ipv6;
	__u8 pad[3];
};

struct bpfwall_bucket_key {
	struct bpfwall_source src;
	__u32 param; /* index into rule_params */
};

/* Bans: a scope-level LRU table, checked before the rules, kept across
 * applies. Times are CLOCK_MONOTONIC (bpf_ktime_get_ns). */
#define BPFWALL_MAX_BANS 65536

enum bpfwall_ban_reason {
	BPFWALL_BAN_RULE = 0, /* an action ban rule: rule holds its name */
	BPFWALL_BAN_SCAN = 1, /* touched more than scan_ports closed ports */
};

struct bpfwall_ban {
	__u64 since_ns;
	__u64 expires_ns;
	__u32 reason; /* enum bpfwall_ban_reason */
	__u32 generation;
	__u32 rule; /* the banning rule's index in that generation */
	__u32 pad;
};

/* Port-scan tracking: per source, the closed ports it touched in the
 * current window, as a 256-bit filter (distinct ports, approximately). */
#define BPFWALL_SCAN_SOURCES 65536

struct bpfwall_scan_state {
	__u64 window_start_ns;
	__u64 seen[4];
	__u32 ports; /* distinct closed ports in this window */
	__u32 pad;
};

/* Test hook: a non-zero value of the clock map replaces bpf_ktime_get_ns()
 * for limits, bans and scans, so tests can move time. */

/* Per-generation constants, in .rodata so the verifier prunes unused
 * fields and knows every loop bound. */
/* A CIDR set one address field names: its slot, and the class of the rules
 * that name it there (added to the field's bitvector when the address is in it). */
struct bpfwall_set_ref {
	__u32 slot;
	__u32 cls;
};

/* Counters are kept per protected interface: slot 1.. for the interfaces of
 * the apply (by ifindex, below IFINDEX_SLOTS), slot 0 for any other. */
#define BPFWALL_MAX_IFACES    8
#define BPFWALL_IFINDEX_SLOTS 4096

/* Packet logs: a ring buffer of the scope, kept across applies. */
#define BPFWALL_LOG_RING_BYTES (1 << 20)

/* A rule's log limit and its state, GCRA: a record is allowed when now is at
 * least tat - burst_ns; each allowed record moves tat interval_ns on. */
struct bpfwall_log_state {
	__u64 interval_ns; /* 0: the rule does not log */
	__u64 burst_ns;	   /* interval_ns * burst */
	__u64 tat;	   /* theoretical arrival time of the next record */
	__u64 suppressed;  /* records the limit held back */
};

/* What dropped packets came from, for `bpfwall top`: kept only while
 * drop_stats_until's lease runs (top renews it), so it costs one array read a drop
 * otherwise. Sources are sampled, one drop in DROP_SOURCE_SAMPLE. */
#define BPFWALL_DROP_SOURCES	   4096
#define BPFWALL_DROP_SOURCE_SAMPLE 16

struct bpfwall_drop_source {
	__u8 addr[16];
	__u8 is_ipv6;
	__u8 pad[3];
};

struct bpfwall_log_record {
	__u64 time_ns; /* CLOCK_MONOTONIC */
	__u32 generation;
	__u32 rule;
	__u32 ifindex;
	__u32 len;
	__u8 direction; /* 0 ingress, 1 egress */
	__u8 action;	/* enum bpfwall_action */
	__u8 is_ipv6;
	__u8 proto;
	__u8 has_l4;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct bpfwall_config {
	__u32 fields;	      /* bitmask of enum bpfwall_field */
	__u32 n_words;	      /* 64-bit words of a rule bitvector */
	__u32 n_summary;      /* summary words that precede them */
	__u32 policy_ingress; /* enum bpfwall_action */
	__u32 policy_egress;
	__u32 iface_default_class; /* class of an interface no rule names */
	/* Tries that hold only their /0 entry, bit (field - SRC) * 2 + is_ipv6:
	 * their class is root_class[bit] and the lookup is skipped. */
	__u32 trie_root_only;
	__u32 root_class[4];
	__u32 direction;  /* 0 ingress (XDP), 1 egress (tcx) */
	__u32 ct_enabled; /* some rule matches ct: track flows */
	struct bpfwall_ct_timeouts ct_timeouts;
	__u32 n_src_sets;
	__u32 n_dst_sets;
	__u32 log_enabled;  /* some rule logs */
	__u32 n_params;	    /* rule_params in use: the bound of the limit loop */
	__u32 bans_enabled; /* some rule bans, or scans are watched: check the ban table */
	/* Port-scan defence (ingress): scan_ports > 0 turns it on. */
	__u32 scan_ports;
	__u64 scan_window_ns;
	__u64 scan_ban_ns;
	/* SYN cookies (ingress): SYNs to a listed port beyond this rate are
	 * answered from XDP. syn_rate 0: off. */
	__u64 syn_period_ns;
	__u64 syn_tolerance_ns;
	__u32 syn_rate;
	__u32 pad1;
	/* The budget of reject answers (ingress), as GCRA costs and tolerances:
	 * all sources together, then each source. A cost of 0: no budget. */
	__u64 reject_cost_ns;
	__u64 reject_tolerance_ns;
	__u64 reject_source_cost_ns;
	__u64 reject_source_tolerance_ns;
	/* never_ban (ingress): sources no ban touches, its literal prefixes in
	 * the never_ban trie (never_ban_literals: it has some) and its sets. */
	__u32 never_ban_literals;
	__u32 n_never_ban_sets;
	__u32 never_ban_slots[BPFWALL_MAX_NEVER_BAN_SETS];
	struct bpfwall_set_ref src_sets[BPFWALL_MAX_FIELD_SETS];
	struct bpfwall_set_ref dst_sets[BPFWALL_MAX_FIELD_SETS];
	/* Blocklists (ingress): the leading n_blocklists rules drop by source set
	 * alone; blocklist_sets[j] is rule j's sets as bits of src_sets. A packet
	 * from one is judged before the connection table and the other fields. */
	__u32 n_blocklists;
	__u32 blocklist_sets[BPFWALL_MAX_FIELD_SETS];
	/* Owners (egress): bit L of cgroup_levels says some rule names a cgroup
	 * L levels below the root; a socket outside every named cgroup, and a
	 * packet without a socket, take the default classes. */
	__u32 cgroup_levels;
	__u32 cgroup_default_class;
	__u32 user_default_class;
	/* Verdicts at connect() and sendmsg() (egress rules with owners): the
	 * class of the rules that depend on what only a packet of the
	 * connection shows, for TCP (BPFWALL_AT_CONNECT_TCP) and UDP. */
	__u32 connect_unsure[2];
};

/*
 * A BPF_PROG_TEST_RUN of bpfwall_egress runs with a socket of the kernel's
 * own, of type 0 (no real socket has one), in the caller's cgroup and owned
 * by uid 0. Its cb[] can ask for more (real traffic cannot, its socket has
 * a type): cb[0] = BPFWALL_RUN_MAGIC, cb[1] = the uid to judge as the
 * socket's, cb[2] = BPFWALL_RUN_* flags. An explained run is not traffic
 * (nothing counted, logged or tracked, no reject sent) and comes back with
 * cb[3] = the rule (or BPFWALL_NO_RULE), cb[4] = decision << 16 | action.
 */
#define BPFWALL_RUN_MAGIC     0x62776f77u
#define BPFWALL_RUN_NO_SOCKET 1u /* judge it as a packet without a socket */
#define BPFWALL_RUN_EXPLAIN   2u
#define BPFWALL_RUN_REQUEST   0x80000000u /* set in a request read from cb[] */

#define BPFWALL_AT_CONNECT_TCP 0
#define BPFWALL_AT_CONNECT_UDP 1

/* Where the cgroup connect and sendmsg programs judge: the network
 * namespace (its cookie; 0: nowhere) whose way out the apply protects. */
struct bpfwall_connect_scope {
	__u64 netns_cookie;
};

/* An address of the namespace's own, IPv4 as IPv4-mapped IPv6: a connection
 * to it goes over loopback, which no bpfwall program judges. */
struct bpfwall_addr16 {
	__u8 addr[16];
};

struct bpfwall_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Set trie keys: prefixlen counts the 32 bits of key_slot, then the address. */
struct bpfwall_set4_key {
	__u32 prefixlen;
	__u32 key_slot; /* slot * 2 + version */
	__u8 addr[4];
};

struct bpfwall_set6_key {
	__u32 prefixlen;
	__u32 key_slot;
	__u8 addr[16];
};

/*
 * Set host tables: the single addresses (/32, /128) of every set, and its IPv4
 * networks, one entry each, in an array searched by linear probing from a
 * slot the element hashes to (with its set's seed), at most
 * BPFWALL_HOST_PROBES entries on; the array has that many entries past its
 * last home slot, so a search never wraps. An entry's tag names its set and
 * prefix length; its span says from which version of its set (set_state)
 * until which one the element is in it: a change writes its elements as of
 * the next version, then moves the set to it, so one entry serves both
 * versions. A dead entry (since == until) keeps its place, so later entries
 * stay reachable; a new element may take it over.
 */
#define BPFWALL_HOST_PROBES 32

/* An entry's tag: the set's slot + 1 (0: never used, the end of a search)
 * and the element's prefix length. */
#define BPFWALL_HOST_TAG(slot, plen) (((slot) + 1) | ((plen) << 8))

struct bpfwall_host4_entry {
	__u32 tag;   /* BPFWALL_HOST_TAG */
	__u32 addr;  /* network order */
	__u32 since; /* the first version that holds the address */
	__u32 until; /* the first version that does not (BPFWALL_HOST_FOREVER: none) */
};

struct bpfwall_host6_entry {
	__u32 tag;
	__u32 addr[4];
	__u32 since;
	__u32 until;
};

/* A set's state: the version in force (the low bit picks its trie copy), the
 * seed its elements hash with (chosen when it is filled), the prefix lengths
 * of the IPv4 networks its host table may hold (bit n: /n), and which tries
 * may hold its elements. Lengths and tries are added before a version that
 * needs them and dropped only by a fill, so a packet never skips a search
 * that its version needs. */
struct bpfwall_set_state {
	__u32 version;
	__u32 seed;
	__u32 lengths4;
	__u32 tries; /* BPFWALL_SET_TRIE4 | BPFWALL_SET_TRIE6 */
};

#define BPFWALL_SET_TRIE4 1
#define BPFWALL_SET_TRIE6 2

/* The hash of an address word into h (twice the golden ratio's bits): the
 * host tables take a home slot from its high bits, by multiplication. */
#define BPFWALL_HOST_MIX  0x9e3779b1u
#define BPFWALL_HOST_SLOT 0x01000193u

#define BPFWALL_HOST_FOREVER 0xffffffffu

struct bpfwall_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * XDP metadata that `explain` and the tests put in front of a frame sent with
 * BPF_PROG_TEST_RUN. Only test runs and XDP programs can create metadata,
 * never the wire. A marked frame is not counted, and the program writes its
 * decision back into the metadata, which the test run returns.
 */
#define BPFWALL_EXPLAIN_MAGIC 0x6277666cu
/* Tests: a frame marked so is traffic (counted, changes state) and still
 * reports its decision. */
#define BPFWALL_TRACE_MAGIC 0x62776674u

struct bpfwall_explain {
	__u32 magic;
	__u32 rule;	/* rule index or BPFWALL_NO_RULE */
	__u32 decision; /* enum bpfwall_decision */
	__u32 action;	/* enum bpfwall_action */
};

#endif
