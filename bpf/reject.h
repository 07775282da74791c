/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `reject`: answer TCP with a RST and other IP traffic with an ICMP (v6) port
 * unreachable, built in place and sent back out with XDP_TX. ICMP itself is
 * never answered (no error about an error, no amplification), nor is
 * anything sent to a multicast or broadcast address; those are dropped.
 */
#ifndef BPFWALL_REJECT_H
#define BPFWALL_REJECT_H

#include "parse.h"

#define REPLY_TTL 64
/* Bytes of the offending packet quoted in an ICMP error: enough for the
 * sender's stack to find its socket, small enough for a bounded loop. */
#define ICMP_QUOTE_MAX 512

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Sum of the 16-bit words of an address pair, for pseudo-headers. */
static __always_inline __u32 csum_addrs(const __u8 *a, const __u8 *b, int len)
{
	__u32 sum = 0;
	int i;

	/* No early exit: a loop with a break on a runtime length is one that
	 * newer clangs refuse to unroll. */
#pragma unroll
	for (i = 0; i < 16; i += 2) {
		if (i < len)
			sum += *(__u16 *)(a + i) + *(__u16 *)(b + i);
	}
	return sum;
}

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* Writes a fresh IP header at l3 (no options, no extension headers) from
 * the packet's addresses, swapped. Returns its length. */
static __always_inline int write_ip_header(void *l3, void *data_end, const struct packet *pkt,
					   __u8 proto, __u16 payload_len)
{
	if (pkt->is_ipv6) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(payload_len);
		ip6->nexthdr = proto;
		ip6->hop_limit = REPLY_TTL;
		__builtin_memcpy(&ip6->saddr, pkt->daddr, 16);
		__builtin_memcpy(&ip6->daddr, pkt->saddr, 16);
		return sizeof(*ip6);
	} else {
		struct iphdr *ip = l3;
		__u32 sum = 0;
		int i;

		if ((void *)(ip + 1) > data_end)
			return -1;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + payload_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000); /* DF */
		ip->ttl = REPLY_TTL;
		ip->protocol = proto;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, pkt->daddr, 4);
		__builtin_memcpy(&ip->daddr, pkt->saddr, 4);
#pragma unroll
		for (i = 0; i < 10; i++)
			sum += ((__u16 *)ip)[i];
		ip->check = csum_fold(sum);
		return sizeof(*ip);
	}
}

static __always_inline __u32 pseudo_header_sum(const struct packet *pkt, __u8 proto, __u32 len)
{
	/* The reply's addresses are the packet's swapped; the sum is the same. */
	__u32 sum = csum_addrs(pkt->saddr, pkt->daddr, pkt->is_ipv6 ? 16 : 4);

	return sum + bpf_htons(proto) + bpf_htons(len);
}

/* The frame cut to new_len bytes: a jumbo frame's fragments go first. */
static __always_inline int shrink_to(struct xdp_md *ctx, __u32 new_len)
{
	__u32 cur = bpf_xdp_get_buff_len(ctx);

	if (new_len >= cur)
		return 0;
	return bpf_xdp_adjust_tail(ctx, (int)new_len - (int)cur);
}

/*
 * Turns the TCP segment of the frame at data into the RST its receiver would
 * answer it with, in place: MACs swapped, a fresh IP header, a bare TCP
 * header. Returns the length the frame must be cut to, or -1 (the segment is
 * a RST itself, or not all there).
 */
static __always_inline int write_tcp_reset(void *data, void *data_end, const struct packet *pkt)
{
	__u32 l3 = pkt->l3_off, l4 = pkt->l4_off;
	struct tcphdr reply = {};
	__u32 seq, payload, sum;
	struct tcphdr *th;
	int iplen, i;

	/* Bounded offsets let the verifier follow the pointers below. */
	if (l3 > 64 || l4 > 0x3fff)
		return -1;
	/* The Ethernet check first: after the TCP one a compiler may drop it as
	 * implied (clang 19 does), which the verifier cannot follow. */
	if (data + sizeof(struct ethhdr) > data_end)
		return -1;
	th = data + l4;
	if ((void *)(th + 1) > data_end || th->rst)
		return -1;
	seq = bpf_ntohl(th->seq);
	payload = pkt->l3_end - pkt->l4_off - th->doff * 4;
	reply.source = th->dest;
	reply.dest = th->source;
	reply.doff = 5;
	reply.rst = 1;
	if (th->ack) {
		reply.seq = th->ack_seq;
	} else {
		reply.ack = 1;
		reply.ack_seq = bpf_htonl(seq + payload + th->syn + th->fin);
	}

	swap_macs(data);
	iplen = write_ip_header(data + l3, data_end, pkt, IPPROTO_TCP, sizeof(reply));
	if (iplen < 0)
		return -1;
	th = data + l3 + iplen;
	if ((void *)(th + 1) > data_end)
		return -1;
	*th = reply;
	sum = pseudo_header_sum(pkt, IPPROTO_TCP, sizeof(reply));
#pragma unroll
	for (i = 0; i < 10; i++)
		sum += ((__u16 *)th)[i];
	th->check = csum_fold(sum);
	return l3 + iplen + sizeof(reply);
}

/*
 * Writes an ICMP (v6) port unreachable header at icmp, with its checksum over
 * it and the quote of quote bytes (even) behind it. Returns -1 when the bytes
 * are not all there.
 */
static __always_inline int write_port_unreachable(__u8 *icmp, void *data_end,
						  const struct packet *pkt, __u32 quote)
{
	__u32 sum, i;

	if ((void *)(icmp + 8) > data_end)
		return -1;
	if (pkt->is_ipv6) {
		icmp[0] = ICMPV6_DEST_UNREACH;
		icmp[1] = ICMPV6_PORT_UNREACH;
	} else {
		icmp[0] = ICMP_DEST_UNREACH;
		icmp[1] = ICMP_PORT_UNREACH;
	}
	*(__u16 *)(icmp + 2) = 0;
	*(__u32 *)(icmp + 4) = 0;
	sum = pkt->is_ipv6 ? pseudo_header_sum(pkt, IPPROTO_ICMPV6, 8 + quote) : 0;
	for (i = 0; i < (8 + ICMP_QUOTE_MAX) / 2; i++) {
		__u16 *word = (__u16 *)(icmp + i * 2);

		if (i * 2 >= 8 + quote || (void *)(word + 1) > data_end)
			break;
		sum += *word;
	}
	*(__u16 *)(icmp + 2) = csum_fold(sum);
	return 0;
}

/* Bytes of the packet an ICMP error quotes: its IP packet, up to
 * ICMP_QUOTE_MAX, and even (which keeps the checksum loop simple). */
static __always_inline __u32 icmp_quote_len(const struct packet *pkt)
{
	__u32 quote = pkt->l3_end - pkt->l3_off;

	return (quote > ICMP_QUOTE_MAX ? ICMP_QUOTE_MAX : quote) & ~1u;
}

/* Bytes an ICMP error puts in front of its quote: an IP and an ICMP header. */
static __always_inline __u32 icmp_header_len(const struct packet *pkt)
{
	return (pkt->is_ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) + 8;
}

static __always_inline int reject_tcp(struct xdp_md *ctx, const struct packet *pkt)
{
	int len = write_tcp_reset((void *)(long)ctx->data, (void *)(long)ctx->data_end, pkt);

	if (len < 0 || shrink_to(ctx, len))
		return XDP_DROP;
	return XDP_TX;
}

static __always_inline int reject_icmp(struct xdp_md *ctx, const struct packet *pkt)
{
	__u32 l3 = pkt->l3_off;
	__u32 grow = icmp_header_len(pkt);
	__u32 quote = icmp_quote_len(pkt);
	__u8 l2[ETH_HLEN + MAX_VLAN_TAGS * 4];
	void *data, *data_end;
	int iplen;

	/* Keep the L2 header (VLAN tags included) with the MACs swapped. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (l3 > sizeof(l2) || data + sizeof(l2) > data_end)
		return XDP_DROP;
	__builtin_memcpy(l2, data, sizeof(l2));
	swap_macs((struct ethhdr *)l2);

	/* Make room in front: the offending IP packet stays where it is and
	 * becomes the quote behind the new IP and ICMP headers. */
	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return XDP_DROP;
	if (shrink_to(ctx, l3 + grow + quote))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(l2) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, l2, sizeof(l2));
	/* The copy above spilled the old L3 start over the new headers for
	 * frames with fewer VLAN tags; the headers below overwrite it. */
	iplen = write_ip_header(data + l3, data_end, pkt,
				pkt->is_ipv6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, 8 + quote);
	if (iplen < 0)
		return XDP_DROP;
	if (write_port_unreachable(data + l3 + iplen, data_end, pkt, quote))
		return XDP_DROP;
	return XDP_TX;
}

/* Whether a reject of pkt is answered: never an RST, an ICMP message, a
 * fragment without its ports, or anything sent to a group address. */
static __always_inline int answer_due(const struct packet *pkt)
{
	if (pkt->l2_multicast || !pkt->has_l4)
		return 0;
	if (pkt->is_ipv6 ? pkt->daddr[0] == 0xff
			 : (pkt->daddr[0] & 0xf0) == 0xe0 || *(__u32 *)pkt->daddr == 0xffffffff)
		return 0;
	if (pkt->proto == IPPROTO_TCP)
		return !(pkt->tcp_flags & TCPF_RST) && pkt->l4_off <= 0x3fff;
	return !proto_is_icmp(pkt);
}

/* Answers pkt with a refusal (the caller checked answer_due). A global
 * function, verified once. */
__noinline int reject_packet(struct xdp_md *ctx, const struct packet *pkt)
{
	if (!pkt)
		return XDP_DROP;
	if (pkt->proto == IPPROTO_TCP)
		return reject_tcp(ctx, pkt);
	return reject_icmp(ctx, pkt);
}

#endif
