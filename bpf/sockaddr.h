/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Egress verdicts where the process acts: the cgroup connect and sendmsg
 * programs judge the connection a TCP connect(), a UDP connect() or an
 * unconnected UDP sendmsg() is about to make, before any packet exists.
 * They know the destination, the protocol and the owner (the calling task's
 * cgroup and uid); a packet of the connection would also show its source
 * address and port, its interface and its TCP flags, and, for UDP, its
 * connection state, and a limit or a ban depends on the traffic. So the
 * search leaves those fields out, and a verdict is only given when the
 * first rule that can match needs none of them (the compiler's
 * connect_unsure class lists the rules that do): then every packet of the
 * connection would meet that rule first. Otherwise the connection goes on
 * and bpfwall_egress judges its packets.
 */
#ifndef BPFWALL_SOCKADDR_H
#define BPFWALL_SOCKADDR_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shared.h"
#include "cfg.h"
#include "parse.h"
#include "classify.h"

/* The namespace the programs judge in (struct bpfwall_connect_scope). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpfwall_connect_scope);
} connect_scope SEC(".maps");

/* The namespace's own addresses, which connections reach over loopback. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bpfwall_addr16);
	__type(value, __u8);
} local_addrs SEC(".maps");

/* Address families (linux/socket.h, which uapi does not carry). */
#define SOCKADDR_AF_INET  2
#define SOCKADDR_AF_INET6 10

/* The fields the search leaves out: for TCP the packet is a new
 * connection's SYN; for UDP its state is not known either. */
#define AT_CONNECT_SKIP_TCP                                                       \
	((1 << BPFWALL_F_IFACE) | (1 << BPFWALL_F_SRC) | (1 << BPFWALL_F_SPORT) | \
	 (1 << BPFWALL_F_TCPFLAGS))
#define AT_CONNECT_SKIP_UDP (AT_CONNECT_SKIP_TCP | (1 << BPFWALL_F_CT))

/* Whether the connection is judged here: made in the protected namespace. */
static __always_inline int judged_here(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct bpfwall_connect_scope *scope = bpf_map_lookup_elem(&connect_scope, &zero);

	return scope && scope->netns_cookie && bpf_get_netns_cookie(ctx) == scope->netns_cookie;
}

/*
 * The first packet of the connection, as far as it is known: protocol,
 * destination, and for TCP a new connection. v6 (a constant): the hook is an
 * IPv6 one, whose context has user_ip6 (an IPv4 hook's has only user_ip4).
 * Returns 0, or -1 for what is not judged here (another protocol, or a
 * destination over loopback: the namespace's own addresses, 127.0.0.0/8,
 * ::1, the unspecified address).
 */
static __always_inline int sockaddr_packet(struct bpf_sock_addr *ctx, struct packet *pkt,
					   const int v6)
{
	struct bpfwall_addr16 key = {};
	__u32 a0 = 0, a1 = 0, a2 = bpf_htonl(0xffff), a3;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return -1;
	pkt->proto = ctx->protocol;
	pkt->has_l4 = 1;
	pkt->ct_state = BPFWALL_CT_NEW;
	pkt->dport = bpf_ntohs((__u16)ctx->user_port);
	if (v6) {
		if (ctx->user_family != SOCKADDR_AF_INET6)
			return -1;
		a0 = ctx->user_ip6[0];
		a1 = ctx->user_ip6[1];
		a2 = ctx->user_ip6[2];
		a3 = ctx->user_ip6[3];
	} else {
		if (ctx->user_family != SOCKADDR_AF_INET)
			return -1;
		a3 = ctx->user_ip4;
	}
	__builtin_memcpy(key.addr, &a0, 4);
	__builtin_memcpy(key.addr + 4, &a1, 4);
	__builtin_memcpy(key.addr + 8, &a2, 4);
	__builtin_memcpy(key.addr + 12, &a3, 4);
	/* IPv4, or IPv4-mapped IPv6, which leaves as IPv4. */
	pkt->is_ipv6 = !(a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff));
	if (pkt->is_ipv6 && (a0 | a1 | a2) == 0 && (a3 == 0 || a3 == bpf_htonl(1)))
		return -1;
	if (!pkt->is_ipv6 && (key.addr[12] == 127 || a3 == 0))
		return -1;
	if (bpf_map_lookup_elem(&local_addrs, &key))
		return -1;
	if (pkt->is_ipv6)
		__builtin_memcpy(pkt->daddr, key.addr, 16);
	else
		__builtin_memcpy(pkt->daddr, key.addr + 12, 4);
	return 0;
}

/* The first rule the connection can meet, with the unknown fields left out. */
__noinline int classify_at_connect_tcp(const struct packet *pkt)
{
	return classify_fields(pkt, 0, SETS_NOT_SEARCHED, AT_CONNECT_SKIP_TCP);
}

__noinline int classify_at_connect_udp(const struct packet *pkt)
{
	return classify_fields(pkt, 0, SETS_NOT_SEARCHED, AT_CONNECT_SKIP_UDP);
}

/* Whether rule needs a field the search left out (connect_unsure). */
static __always_inline int unsure_at_connect(__u32 rule, __u32 udp)
{
	__u32 cls = cfg.connect_unsure[udp ? BPFWALL_AT_CONNECT_UDP : BPFWALL_AT_CONNECT_TCP];
	const __u64 *bits = bpf_map_lookup_elem(&bitvectors, &cls);
	__u64 idx = cfg.n_summary + rule / 64;

	if (!bits)
		return 1;
	barrier_var(idx);
	if (idx >= BPFWALL_MAX_SUMMARY + BPFWALL_MAX_WORDS || idx >= cfg.n_summary + cfg.n_words)
		return 1;
	barrier_var(idx);
	return (bits[idx] >> (rule % 64)) & 1;
}

#endif
