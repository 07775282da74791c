/* SPDX-License-Identifier: GPL-2.0 */
/*
 * SYN-flood defence: SYNs to a listed port beyond the configured rate are
 * answered from XDP with a SYN-ACK whose sequence number is a SYN cookie
 * made by the kernel's own helper (bpf_tcp_raw_gen_syncookie_*), so a flood
 * of spoofed SYNs costs the host no socket memory and no trip up the stack.
 * A client that completes the handshake sends an ACK carrying the cookie,
 * which the firewall lets through; the kernel checks it and makes the
 * connection. That check needs the kernel's SYN cookies always on
 * (net.ipv4.tcp_syncookies=2) or an nftables synproxy for the port, which
 * `apply` verifies. SYNs within the rate go to the kernel as usual, so its
 * listeners keep their full TCP options while there is no flood.
 */
#ifndef BPFWALL_SYNCOOKIE_H
#define BPFWALL_SYNCOOKIE_H

#include "shared.h"
#include "parse.h"
#include "reject.h"
#include "ratelimit.h"

#define SYNACK_WINDOW 65535
#define SYNACK_LEN    24 /* TCP header with one option: MSS */

/* Listed port -> the bucket of its SYN rate. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BPFWALL_MAX_SYN_PORTS);
	__type(key, __u32);
	__type(value, __u64);
} syn_ports SEC(".maps");

/* Whether the SYN should be answered here: its port is listed and SYNs to it
 * run over the rate. */
static __always_inline int syn_flooded(const struct packet *pkt)
{
	__u32 port = pkt->dport;
	__u64 *tat = bpf_map_lookup_elem(&syn_ports, &port);

	if (!tat)
		return 0;
	return !gcra_pay(tat, guard_clock(), cfg.syn_period_ns / cfg.syn_rate, cfg.syn_tolerance_ns,
			 0);
}

/* A pure ACK to a listed port: possibly the end of a handshake answered with
 * a cookie, which the connection table never saw begin. */
static __always_inline int cookie_ack(const struct packet *pkt)
{
	__u32 port = pkt->dport;

	return pkt->has_l4 && pkt->proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST | TCPF_FIN)) == TCPF_ACK &&
	       bpf_map_lookup_elem(&syn_ports, &port);
}

/*
 * Whether a socket other than the listener holds the SYN's 4-tuple: a
 * TIME_WAIT left by an earlier connection, which the kernel reuses only when
 * it sees the SYN itself (an ACK after a cookie would hit the TIME_WAIT and
 * stall). Such a SYN goes to the kernel.
 */
__noinline int syn_tuple_taken(struct xdp_md *ctx, const struct packet *pkt)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 size;
	int taken;

	if (!pkt)
		return 0;
	if (pkt->is_ipv6) {
		__builtin_memcpy(tuple.ipv6.saddr, pkt->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, pkt->daddr, 16);
		tuple.ipv6.sport = bpf_htons(pkt->sport);
		tuple.ipv6.dport = bpf_htons(pkt->dport);
		size = sizeof(tuple.ipv6);
	} else {
		__builtin_memcpy(&tuple.ipv4.saddr, pkt->saddr, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, pkt->daddr, 4);
		tuple.ipv4.sport = bpf_htons(pkt->sport);
		tuple.ipv4.dport = bpf_htons(pkt->dport);
		size = sizeof(tuple.ipv4);
	}
	sk = bpf_skc_lookup_tcp(ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	taken = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return taken;
}

static __always_inline int resize_to(struct xdp_md *ctx, __u32 new_len)
{
	__u32 cur = bpf_xdp_get_buff_len(ctx);

	if (new_len == cur)
		return 0;
	return bpf_xdp_adjust_tail(ctx, (int)new_len - (int)cur);
}

/*
 * Turns the SYN into a SYN-ACK carrying a cookie and returns XDP_TX, or
 * XDP_DROP when no cookie can be made (a SYN so malformed the kernel helper
 * refuses it). A global function, verified once.
 */
__noinline int syncookie_answer(struct xdp_md *ctx, const struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = pkt ? pkt->l3_off : 0, l4 = pkt ? pkt->l4_off : 0;
	struct tcphdr *th;
	__u32 th_len, seq, sum, i;
	__u16 sport, dport, mss;
	__s64 made;
	int iplen;
	__u8 *opt;
	struct {
		union {
			struct iphdr ip;
			struct ipv6hdr ip6;
		};
		__u8 tcp[60];
	} hdrs = {};

	if (!pkt || l3 > 64 || l4 > 0x3fff)
		return XDP_DROP;
	th = data + l4;
	if ((void *)(th + 1) > data_end)
		return XDP_DROP;
	/* The helpers take the headers from the stack: the verifier cannot bound
	 * a packet pointer by a length it only learns from doff. */
	th_len = th->doff * 4;
	if (th_len < sizeof(*th) || th_len > sizeof(hdrs.tcp))
		return XDP_DROP;
	if (bpf_xdp_load_bytes(ctx, l4, hdrs.tcp, th_len))
		return XDP_DROP;
	if (pkt->is_ipv6) {
		if (bpf_xdp_load_bytes(ctx, l3, &hdrs.ip6, sizeof(hdrs.ip6)))
			return XDP_DROP;
		made = bpf_tcp_raw_gen_syncookie_ipv6(&hdrs.ip6, (struct tcphdr *)hdrs.tcp, th_len);
	} else {
		if (bpf_xdp_load_bytes(ctx, l3, &hdrs.ip, sizeof(hdrs.ip)))
			return XDP_DROP;
		made = bpf_tcp_raw_gen_syncookie_ipv4(&hdrs.ip, (struct tcphdr *)hdrs.tcp, th_len);
	}
	if (made < 0)
		return XDP_DROP;
	seq = bpf_ntohl(th->seq);
	sport = th->source;
	dport = th->dest;
	mss = made >> 32;

	/* Fresh packet pointers, checked here: a compiler that sees th + 1 in
	 * bounds may drop this check as implied, which the verifier cannot
	 * follow (clang 19 does); pointers loaded after the helper calls are
	 * unrelated to th for it. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) > data_end)
		return XDP_DROP;
	swap_macs(data);
	iplen = write_ip_header(data + l3, data_end, pkt, IPPROTO_TCP, SYNACK_LEN);
	if (iplen < 0)
		return XDP_DROP;
	/* The reply's length is fixed; the SYN may have been shorter (no options). */
	if (resize_to(ctx, l3 + iplen + SYNACK_LEN))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (l3 + iplen > 64 + sizeof(struct ipv6hdr))
		return XDP_DROP;
	th = data + l3 + iplen;
	if ((void *)th + SYNACK_LEN > data_end)
		return XDP_DROP;
	__builtin_memset(th, 0, sizeof(*th));
	th->source = dport;
	th->dest = sport;
	th->seq = bpf_htonl((__u32)made);
	th->ack_seq = bpf_htonl(seq + 1);
	th->doff = SYNACK_LEN / 4;
	th->syn = 1;
	th->ack = 1;
	th->window = bpf_htons(SYNACK_WINDOW);
	opt = (__u8 *)(th + 1);
	opt[0] = 2; /* MSS */
	opt[1] = 4;
	opt[2] = mss >> 8;
	opt[3] = mss & 0xff;
	sum = pseudo_header_sum(pkt, IPPROTO_TCP, SYNACK_LEN);
#pragma unroll
	for (i = 0; i < SYNACK_LEN / 2; i++)
		sum += ((__u16 *)th)[i];
	th->check = csum_fold(sum);
	return XDP_TX;
}

#endif
