/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection tracking shared by both programs: one LRU hash keyed by the flow
 * in a direction-independent form, pinned once per scope and kept across
 * generations. A packet's state is found before classification (the ct field
 * of the rules); an accepted packet then creates or advances its entry, so a
 * dropped packet never takes a slot. Entries are never deleted on the packet
 * path: an idle one is simply treated as absent and overwritten, and the LRU
 * evicts the oldest when the table is full.
 */
#ifndef BPFWALL_CONNTRACK_H
#define BPFWALL_CONNTRACK_H

#include "shared.h"
#include "cfg.h"
#include "parse.h"

#define NSEC 1000000000ULL

/* max_entries is set by the loader from the rule file. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct bpfwall_ct_key);
	__type(value, struct bpfwall_ct_entry);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BPFWALL_CTS_N);
	__type(key, __u32);
	__type(value, __u64);
} ct_stats SEC(".maps");

/* What the lookup found, for the update after the verdict. */
struct ct_lookup {
	struct bpfwall_ct_key key;
	struct bpfwall_ct_entry *entry; /* live entry, or NULL */
	int from_lo;			/* the packet travels from the key's lo side */
	int stale;			/* an idle entry holds the key */
};

static __always_inline void ct_stat(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&ct_stats, &slot);

	if (v)
		*v += 1;
}

/* Orders two (address, port) ends; returns whether a comes first. */
static __always_inline int end_is_lo(const __u8 *a, __u16 aport, const __u8 *b, __u16 bport)
{
	int i;

#pragma unroll
	for (i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return a[i] < b[i];
	}
	return aport <= bport;
}

/* Fills key from one end pair; returns whether src is the lo end. */
static __always_inline int ct_make_key(struct bpfwall_ct_key *key, __u8 proto, __u8 is_ipv6,
				       const __u8 *src, __u16 sport, const __u8 *dst, __u16 dport)
{
	int lo = end_is_lo(src, sport, dst, dport);

	key->proto = proto;
	key->is_ipv6 = is_ipv6;
	if (lo) {
		__builtin_memcpy(key->addr_lo, src, 16);
		__builtin_memcpy(key->addr_hi, dst, 16);
		key->port_lo = sport;
		key->port_hi = dport;
	} else {
		__builtin_memcpy(key->addr_lo, dst, 16);
		__builtin_memcpy(key->addr_hi, src, 16);
		key->port_lo = dport;
		key->port_hi = sport;
	}
	return lo;
}

/*
 * The ports that identify a flow of the packet: L4 ports, or for ICMP echo the
 * identifier on the requester's end and 0 on the responder's (so a request
 * from the other side is another flow, as in nf_conntrack), or none.
 */
static __always_inline void flow_ports(const struct packet *pkt, __u16 *sport, __u16 *dport)
{
	*sport = 0;
	*dport = 0;
	if (!pkt->has_l4)
		return;
	if (proto_has_ports(pkt->proto)) {
		*sport = pkt->sport;
		*dport = pkt->dport;
	} else if (proto_is_icmp(pkt) && icmp_is_echo(pkt->is_ipv6, pkt->icmp_type)) {
		if (icmp_is_echo_request(pkt->is_ipv6, pkt->icmp_type))
			*sport = pkt->icmp_id;
		else
			*dport = pkt->icmp_id;
	}
}

/* Reads cfg directly: a pointer that casts away its volatile would let clang
 * fold the timeouts to the zeros of the initializer. */
static __always_inline __u64 ct_timeout_ns(const struct bpfwall_ct_entry *e, __u8 proto)
{
	__u32 secs;

	if (proto == IPPROTO_TCP) {
		if (e->tcp_state == BPFWALL_TCP_ESTABLISHED)
			secs = cfg.ct_timeouts.tcp_established;
		else if (e->tcp_state == BPFWALL_TCP_FIN || e->tcp_state == BPFWALL_TCP_TIME_WAIT)
			secs = cfg.ct_timeouts.tcp_fin;
		else if (e->tcp_state == BPFWALL_TCP_CLOSE)
			secs = cfg.ct_timeouts.tcp_close;
		else
			secs = cfg.ct_timeouts.tcp_syn;
	} else if (proto == IPPROTO_UDP) {
		secs = e->flags & BPFWALL_CTF_SEEN_REPLY ? cfg.ct_timeouts.udp_stream
							 : cfg.ct_timeouts.udp;
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		secs = cfg.ct_timeouts.icmp;
	} else {
		secs = cfg.ct_timeouts.generic;
	}
	return secs * NSEC;
}

static __always_inline struct bpfwall_ct_entry *ct_find(const struct bpfwall_ct_key *key, __u64 now,
							int *stale)
{
	struct bpfwall_ct_entry *e = bpf_map_lookup_elem(&conntrack, key);

	*stale = 0;
	if (e && now - e->last_seen_ns > ct_timeout_ns(e, key->proto)) {
		*stale = 1;
		return 0;
	}
	return e;
}

/* The packet's connection state, before any rule is consulted. */
static __always_inline __u32 ct_state_of(const struct packet *pkt, struct ct_lookup *lk, __u64 now)
{
	struct bpfwall_ct_entry *e;
	__u16 sport, dport;
	int orig;

	if (proto_is_icmp(pkt) && pkt->has_l4 && icmp_is_error(pkt->is_ipv6, pkt->icmp_type)) {
		int stale;

		if (!pkt->has_inner)
			return BPFWALL_CT_INVALID;
		/* lk->key holds the quoted flow: a related or invalid packet never
		 * updates the table, and one key on the stack keeps the frame small. */
		ct_make_key(&lk->key, pkt->inner_proto, pkt->is_ipv6, pkt->inner_saddr,
			    pkt->inner_sport, pkt->inner_daddr, pkt->inner_dport);
		return ct_find(&lk->key, now, &stale) ? BPFWALL_CT_RELATED : BPFWALL_CT_INVALID;
	}

	flow_ports(pkt, &sport, &dport);
	lk->from_lo =
	    ct_make_key(&lk->key, pkt->proto, pkt->is_ipv6, pkt->saddr, sport, pkt->daddr, dport);
	e = ct_find(&lk->key, now, &lk->stale);
	if (e && pkt->proto == IPPROTO_TCP && e->tcp_state >= BPFWALL_TCP_TIME_WAIT &&
	    (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN) {
		e = 0; /* a new connection reusing the ports of a closed one */
		lk->stale = 1;
	}
	lk->entry = e;
	if (!e) {
		if (pkt->proto == IPPROTO_TCP)
			return pkt->has_l4 && (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST)) ==
						  TCPF_SYN
				   ? BPFWALL_CT_NEW
				   : BPFWALL_CT_INVALID;
		/* An echo reply answers a request this table has not seen. */
		if (proto_is_icmp(pkt) && pkt->has_l4 && pkt->icmp_type == (pkt->is_ipv6 ? 129 : 0))
			return BPFWALL_CT_INVALID;
		return BPFWALL_CT_NEW;
	}
	orig = lk->from_lo == !!(e->flags & BPFWALL_CTF_ORIG_LO);
	return !orig || (e->flags & BPFWALL_CTF_SEEN_REPLY) ? BPFWALL_CT_ESTABLISHED
							    : BPFWALL_CT_NEW;
}

static __always_inline void ct_tcp_advance(struct bpfwall_ct_entry *e, __u8 flags, int orig)
{
	if (flags & TCPF_RST) {
		e->tcp_state = BPFWALL_TCP_CLOSE;
	} else if (flags & TCPF_FIN) {
		e->flags |= orig ? BPFWALL_CTF_FIN_ORIG : BPFWALL_CTF_FIN_REPLY;
		e->tcp_state =
		    (e->flags & BPFWALL_CTF_FIN_ORIG) && (e->flags & BPFWALL_CTF_FIN_REPLY)
			? BPFWALL_TCP_TIME_WAIT
			: BPFWALL_TCP_FIN;
	} else if (e->tcp_state == BPFWALL_TCP_SYN_SENT && !orig &&
		   (flags & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK)) {
		e->tcp_state = BPFWALL_TCP_SYN_RECV;
	} else if (e->tcp_state == BPFWALL_TCP_SYN_RECV && orig && (flags & TCPF_ACK)) {
		e->tcp_state = BPFWALL_TCP_ESTABLISHED;
	}
}

/*
 * A new flow's entry. A global function: the entry it builds would otherwise
 * sit in the main program's frame, and with classify() nested below that
 * frame the verifier's 512-byte stack limit is near.
 */
__noinline int ct_create(const struct packet *pkt, const struct bpfwall_ct_key *key, int from_lo,
			 int stale, __u64 now)
{
	struct bpfwall_ct_entry fresh = {
	    .created_ns = now,
	    .last_seen_ns = now,
	};

	if (!pkt || !key)
		return 0;
	fresh.flags = from_lo ? BPFWALL_CTF_ORIG_LO : 0;
	/* A TCP flow begins with its SYN, except one whose SYN was answered with
	 * a cookie: it begins with the handshake's last ACK. */
	if (pkt->proto == IPPROTO_TCP)
		fresh.tcp_state =
		    pkt->tcp_flags & TCPF_SYN ? BPFWALL_TCP_SYN_SENT : BPFWALL_TCP_ESTABLISHED;
	fresh.packets[0] = 1;
	fresh.bytes[0] = pkt->len;
	bpf_map_update_elem(&conntrack, key, &fresh, BPF_ANY);
	if (!stale)
		ct_stat(BPFWALL_CTS_CREATED);
	return 0;
}

/* After the packet was accepted: create or advance its flow. */
static __always_inline void ct_accepted(const struct packet *pkt, struct ct_lookup *lk, __u64 now)
{
	struct bpfwall_ct_entry *e = lk->entry;
	int orig;

	if (pkt->ct_state == BPFWALL_CT_RELATED || pkt->ct_state == BPFWALL_CT_INVALID)
		return;
	if (!e) {
		ct_create(pkt, &lk->key, lk->from_lo, lk->stale, now);
		return;
	}
	orig = lk->from_lo == !!(e->flags & BPFWALL_CTF_ORIG_LO);
	e->last_seen_ns = now;
	if (orig) {
		e->packets[0]++;
		e->bytes[0] += pkt->len;
	} else {
		e->packets[1]++;
		e->bytes[1] += pkt->len;
		e->flags |= BPFWALL_CTF_SEEN_REPLY;
	}
	if (pkt->proto == IPPROTO_TCP && pkt->has_l4)
		ct_tcp_advance(e, pkt->tcp_flags, orig);
}

#endif
