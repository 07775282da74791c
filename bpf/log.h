/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Packet logs: a record of each packet a logging rule decides, through a
 * ring buffer, limited per rule in the data plane so a flood never floods
 * the log; what the limit held back is counted. Rules without `log` pay one
 * array read (and nothing at all when no rule logs: log_enabled is a
 * constant). A full ring drops the record, never the packet.
 */
#ifndef BPFWALL_LOG_H
#define BPFWALL_LOG_H

#include "shared.h"
#include "cfg.h"
#include "parse.h"

/* The record's layout, kept in the object's BTF so that the Python mirror is
 * checked against it: records live only in ring buffer memory, which BTF
 * would otherwise not describe. Never read. */
const volatile struct bpfwall_log_record log_record_layout = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BPFWALL_LOG_RING_BYTES);
} log_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* emptied by a copy in memory */
	__uint(max_entries, BPFWALL_MAX_RULES);
	__type(key, __u32);
	__type(value, struct bpfwall_log_state);
} log_state SEC(".maps");

/* Records lost to a full ring (index 0), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} log_lost SEC(".maps");

/*
 * Logs the packet rule decided, if the rule logs and its limit allows. A
 * global function: its record never touches the callers' stack frames.
 */
__noinline int log_packet(const struct packet *pkt, __u32 rule, __u32 action, __u32 ifindex)
{
	struct bpfwall_log_state *st;
	struct bpfwall_log_record *rec;
	__u64 now, tat;

	if (!pkt)
		return 0;
	st = bpf_map_lookup_elem(&log_state, &rule);
	if (!st || !st->interval_ns)
		return 0;
	now = bpf_ktime_get_ns();
	tat = st->tat > now ? st->tat : now;
	if (tat - now > st->burst_ns) {
		__sync_fetch_and_add(&st->suppressed, 1);
		return 0;
	}
	/* Unlocked: two CPUs may both pass one last slot; the limit stays within a record. */
	st->tat = tat + st->interval_ns;
	rec = bpf_ringbuf_reserve(&log_ring, sizeof(*rec), 0);
	if (!rec) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&log_lost, &zero);

		if (lost)
			*lost += 1;
		return 0;
	}
	rec->time_ns = now;
	rec->generation = generation_no;
	rec->rule = rule;
	rec->ifindex = ifindex;
	rec->len = pkt->len;
	rec->direction = cfg.direction;
	rec->action = action;
	rec->is_ipv6 = pkt->is_ipv6;
	rec->proto = pkt->proto;
	rec->has_l4 = pkt->has_l4;
	rec->tcp_flags = pkt->tcp_flags;
	rec->icmp_type = pkt->icmp_type;
	rec->icmp_code = pkt->icmp_code;
	rec->sport = pkt->sport;
	rec->dport = pkt->dport;
	__builtin_memcpy(rec->saddr, pkt->saddr, 16);
	__builtin_memcpy(rec->daddr, pkt->daddr, 16);
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

/* A lease: drop statistics are kept until this CLOCK_MONOTONIC time (ns).
 * `bpfwall top` renews it while it runs, so a top that is killed stops them
 * within a few seconds, and one top's exit never stops another's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drop_stats_until SEC(".maps");

/* Dropped packets by destination port (BPFWALL_PORT_ABSENT: no port). Not
 * per CPU: 65,537 per-CPU slots cost every generation's load a fifth of a
 * second, and only top's drops pay for the atomic add. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* emptied by a copy in memory */
	__uint(max_entries, BPFWALL_PORT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drop_ports SEC(".maps");

/* Sampled dropped packets by source address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFWALL_DROP_SOURCES);
	__type(key, struct bpfwall_drop_source);
	__type(value, __u64);
} drop_sources SEC(".maps");

/* Counts a dropped packet by port and (sampled) by source. A global function:
 * its key stays out of the callers' frames. */
__noinline int note_drop(const struct packet *pkt)
{
	struct bpfwall_drop_source src = {};
	__u32 port;
	__u64 *n, one = 1;

	if (!pkt)
		return 0;
	port = pkt->has_l4 && proto_has_ports(pkt->proto) ? pkt->dport : BPFWALL_PORT_ABSENT;
	n = bpf_map_lookup_elem(&drop_ports, &port);
	if (n)
		__sync_fetch_and_add(n, 1);
	if (bpf_get_prandom_u32() % BPFWALL_DROP_SOURCE_SAMPLE)
		return 0;
	__builtin_memcpy(src.addr, pkt->saddr, 16);
	src.is_ipv6 = pkt->is_ipv6;
	n = bpf_map_lookup_elem(&drop_sources, &src);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&drop_sources, &src, &one, BPF_NOEXIST);
	return 0;
}

static __always_inline void count_drop(const struct packet *pkt, __u32 action, int quiet)
{
	__u32 zero = 0;
	__u64 *until;

	if (quiet || action == BPFWALL_ACT_ACCEPT)
		return;
	until = bpf_map_lookup_elem(&drop_stats_until, &zero);
	if (!until || !*until)
		return; /* no lease: one array read a drop, no clock */
	if (bpf_ktime_get_ns() < *until)
		note_drop(pkt);
	else
		*until = 0; /* lapsed: later drops skip the clock again */
}

#endif
