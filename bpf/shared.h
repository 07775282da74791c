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
	BPFWALL_N_FIELDS = 8,
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

#define BPFWALL_PROTO_BASE    0
#define BPFWALL_SPORT_BASE    (BPFWALL_PROTO_BASE + BPFWALL_PROTO_SLOTS)
#define BPFWALL_DPORT_BASE    (BPFWALL_SPORT_BASE + BPFWALL_PORT_SLOTS)
#define BPFWALL_TCPFLAGS_BASE (BPFWALL_DPORT_BASE + BPFWALL_PORT_SLOTS)
#define BPFWALL_ICMP_BASE     (BPFWALL_TCPFLAGS_BASE + BPFWALL_TCPFLAGS_SLOTS)
#define BPFWALL_CLASS_SLOTS   (BPFWALL_ICMP_BASE + BPFWALL_ICMP_SLOTS)

enum bpfwall_action {
	BPFWALL_ACT_ACCEPT = 0,
	BPFWALL_ACT_DROP = 1,
	BPFWALL_ACT_REJECT = 2,
};

/* Slots of the counters array after the per-rule ones. */
enum bpfwall_counter_slot {
	BPFWALL_CNT_POLICY_INGRESS = BPFWALL_MAX_RULES,
	BPFWALL_CNT_POLICY_EGRESS,
	BPFWALL_CNT_MALFORMED,
	BPFWALL_CNT_NOT_IP,	   /* ARP and other non-IP, always passed */
	BPFWALL_CNT_REJECT_SENT,   /* RST or ICMP error built and sent */
	BPFWALL_CNT_REJECT_FAILED, /* reject asked but the packet was dropped */
	BPFWALL_N_COUNTERS,
};

/* What decided a packet, as `explain` reads it back. */
enum bpfwall_decision {
	BPFWALL_BY_RULE = 0,
	BPFWALL_BY_POLICY = 1,
	BPFWALL_BY_MALFORMED = 2,
	BPFWALL_BY_NOT_IP = 3,
};

/* Per-generation constants, in .rodata so the verifier prunes unused
 * fields and knows every loop bound. */
struct bpfwall_config {
	__u32 fields; /* bitmask of enum bpfwall_field */
	__u32 n_rules;
	__u32 n_words;	      /* 64-bit words of a rule bitvector */
	__u32 n_summary;      /* summary words that precede them */
	__u32 policy_ingress; /* enum bpfwall_action */
	__u32 policy_egress;
	__u32 iface_default_class; /* class of an interface no rule names */
	/* Tries that hold only their /0 entry, bit (field - SRC) * 2 + is_ipv6:
	 * their class is root_class[bit] and the lookup is skipped. */
	__u32 trie_root_only;
	__u32 root_class[4];
};

struct bpfwall_lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct bpfwall_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

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

struct bpfwall_explain {
	__u32 magic;
	__u32 rule;	/* rule index or BPFWALL_NO_RULE */
	__u32 decision; /* enum bpfwall_decision */
	__u32 action;	/* enum bpfwall_action */
};

#endif
