/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Parse a frame once into a packet key. Every header read is preceded by a
 * bounds check against data_end; a packet too short for a header it claims
 * is PARSE_MALFORMED.
 */
#ifndef BPFWALL_PARSE_H
#define BPFWALL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "icmp_defs.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_VLAN_TAGS 2
/* IPv6 extension headers walked before giving up (the packet is then
 * malformed: a chain this long is an evasion attempt, not traffic). */
#define MAX_IPV6_EXT 8

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif
#define IPPROTO_MH 135

enum parse_result {
	PARSE_IP = 0,
	PARSE_NOT_IP = 1,
	PARSE_MALFORMED = 2,
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct ipv6_ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* The TCP flags byte (packet.tcp_flags). */
#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

struct packet {
	__u32 len; /* whole frame */
	__u32 l3_off;
	__u32 l4_off;
	__u32 l3_end; /* end of the IP packet as its header states */
	__u8 is_ipv6;
	__u8 proto;	/* upper-layer protocol number */
	__u8 has_l4;	/* L4 header present: not a non-first fragment */
	__u8 tcp_flags; /* TCPF_* */
	__u16 sport;	/* host order; valid for TCP, UDP, SCTP with has_l4 */
	__u16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l2_multicast;
	__u8 ct_state;	/* enum bpfwall_ct_state, set before classification */
	__u8 saddr[16]; /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 icmp_id; /* ICMP echo identifier */
	/* The packet an ICMP error quotes (its first 8 L4 bytes at least). */
	__u8 has_inner;
	__u8 inner_proto;
	__u16 inner_sport; /* for a quoted echo, as flow_ports() keys it */
	__u16 inner_dport;
	__u8 inner_saddr[16];
	__u8 inner_daddr[16];
	__u32 rule; /* out: the deciding rule, or BPFWALL_NO_RULE */
};

static __always_inline int proto_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline int proto_is_icmp(const struct packet *pkt)
{
	return pkt->is_ipv6 ? pkt->proto == IPPROTO_ICMPV6 : pkt->proto == IPPROTO_ICMP;
}

static __always_inline int icmp_is_echo(int is_ipv6, __u8 type)
{
	return is_ipv6 ? type == 128 || type == 129 : type == 8 || type == 0;
}

static __always_inline int icmp_is_echo_request(int is_ipv6, __u8 type)
{
	return is_ipv6 ? type == 128 : type == 8;
}

/* Errors that quote the packet they are about: destination unreachable,
 * time exceeded, parameter problem, and (IPv6) packet too big. */
static __always_inline int icmp_is_error(int is_ipv6, __u8 type)
{
	return is_ipv6 ? type >= 1 && type <= 4 : type == 3 || type == 11 || type == 12;
}

/*
 * Reads the IP header and first 8 L4 bytes an ICMP error quotes. A quote that
 * is cut short is not malformed (quotes may be truncated): the packet simply
 * has no inner flow.
 */
static __always_inline void parse_icmp_quote(void *data, void *data_end, struct packet *pkt)
{
	__u32 off = pkt->l4_off + 8;
	__u8 *l4;

	if (pkt->is_ipv6) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return;
		__builtin_memcpy(pkt->inner_saddr, &ip6->saddr, 16);
		__builtin_memcpy(pkt->inner_daddr, &ip6->daddr, 16);
		pkt->inner_proto = ip6->nexthdr;
		off += sizeof(*ip6);
	} else {
		struct iphdr *ip = data + off;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return;
		__builtin_memcpy(pkt->inner_saddr, &ip->saddr, 4);
		__builtin_memcpy(pkt->inner_daddr, &ip->daddr, 4);
		pkt->inner_proto = ip->protocol;
		off += ip->ihl * 4;
	}
	l4 = data + off;
	if ((void *)(l4 + 8) > data_end || off + 8 > pkt->l3_end)
		return;
	if (proto_has_ports(pkt->inner_proto)) {
		pkt->inner_sport = (__u16)l4[0] << 8 | l4[1];
		pkt->inner_dport = (__u16)l4[2] << 8 | l4[3];
	} else if (pkt->inner_proto == pkt->proto && icmp_is_echo(pkt->is_ipv6, l4[0])) {
		/* as flow_ports() keys echo: the identifier on the requester's end */
		__u16 id = (__u16)l4[4] << 8 | l4[5];

		if (icmp_is_echo_request(pkt->is_ipv6, l4[0]))
			pkt->inner_sport = id;
		else
			pkt->inner_dport = id;
	}
	pkt->has_inner = 1;
}

/*
 * Reads the upper-layer header at pkt->l4_off, if the packet has one. The
 * header must fit inside the IP packet as its length field states, not only
 * inside the frame (trailing Ethernet padding is not a header).
 */
static __always_inline int parse_l4(void *data, void *data_end, struct packet *pkt)
{
	void *l4 = data + pkt->l4_off;
	__u32 avail = pkt->l3_end - pkt->l4_off;

	if (!pkt->has_l4)
		return PARSE_IP;
	if (pkt->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || avail < sizeof(*th))
			return PARSE_MALFORMED;
		if (th->doff < 5 || th->doff * 4 > avail)
			return PARSE_MALFORMED;
		pkt->sport = bpf_ntohs(th->source);
		pkt->dport = bpf_ntohs(th->dest);
		pkt->tcp_flags = ((__u8 *)th)[13];
	} else if (pkt->proto == IPPROTO_UDP || pkt->proto == IPPROTO_SCTP) {
		/* Both start with source and destination port; SCTP's common
		 * header is 12 bytes, UDP's 8. */
		__u32 need = pkt->proto == IPPROTO_UDP ? 8 : 12;
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end || avail < need)
			return PARSE_MALFORMED;
		pkt->sport = bpf_ntohs(ports[0]);
		pkt->dport = bpf_ntohs(ports[1]);
	} else if (proto_is_icmp(pkt)) {
		__u8 *icmp = l4;

		/* Every ICMP and ICMPv6 message has an 8-byte header. */
		if ((void *)(icmp + 8) > data_end || avail < 8)
			return PARSE_MALFORMED;
		pkt->icmp_type = icmp[0];
		pkt->icmp_code = icmp[1];
		pkt->icmp_id = (__u16)icmp[4] << 8 | icmp[5];
		if (icmp_is_error(pkt->is_ipv6, icmp[0]))
			parse_icmp_quote(data, data_end, pkt);
	}
	return PARSE_IP;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct packet *pkt)
{
	struct iphdr *ip = data + pkt->l3_off;
	__u32 hlen, tot_len;
	__u16 frag;

	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	hlen = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hlen || tot_len > pkt->len - pkt->l3_off)
		return PARSE_MALFORMED;
	pkt->l3_end = pkt->l3_off + tot_len;
	pkt->l4_off = pkt->l3_off + hlen;
	pkt->proto = ip->protocol;
	__builtin_memcpy(pkt->saddr, &ip->saddr, 4);
	__builtin_memcpy(pkt->daddr, &ip->daddr, 4);
	frag = bpf_ntohs(ip->frag_off);
	/* A non-first fragment carries no L4 header. */
	pkt->has_l4 = (frag & 0x1fff) == 0;
	return parse_l4(data, data_end, pkt);
}

static __always_inline int ipv6_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_FRAGMENT ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH || nh == IPPROTO_MH;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	__u32 off, plen;
	__u8 nh;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	plen = bpf_ntohs(ip6->payload_len);
	if (plen > pkt->len - pkt->l3_off - sizeof(*ip6))
		return PARSE_MALFORMED;
	pkt->l3_end = pkt->l3_off + sizeof(*ip6) + plen;
	pkt->is_ipv6 = 1;
	__builtin_memcpy(pkt->saddr, &ip6->saddr, 16);
	__builtin_memcpy(pkt->daddr, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	off = pkt->l3_off + sizeof(*ip6);
	pkt->has_l4 = 1;

	for (i = 0; i < MAX_IPV6_EXT; i++) {
		struct ipv6_ext_hdr *ext = data + off;

		if (nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr *fh = data + off;

			if ((void *)(fh + 1) > data_end)
				return PARSE_MALFORMED;
			nh = fh->nexthdr;
			off += sizeof(*fh);
			if (bpf_ntohs(fh->frag_off) & 0xfff8) {
				pkt->has_l4 = 0;
				goto upper;
			}
			continue;
		}
		if (!ipv6_is_ext(nh))
			goto upper;
		if ((void *)(ext + 1) > data_end)
			return PARSE_MALFORMED;
		/* AH counts its length in 4-byte units less 2, the others in
		 * 8-byte units less 1. */
		if (nh == IPPROTO_AH)
			off += (ext->hdrlen + 2) * 4;
		else
			off += (ext->hdrlen + 1) * 8;
		nh = ext->nexthdr;
	}
	/* Walked MAX_IPV6_EXT headers and another one follows. */
	if (ipv6_is_ext(nh))
		return PARSE_MALFORMED;
upper:
	pkt->proto = nh;
	pkt->l4_off = off;
	if (off > pkt->l3_end)
		return PARSE_MALFORMED;
	return parse_l4(data, data_end, pkt);
}

/* Fills pkt from the frame of len bytes (data_end - data of them readable). */
static __always_inline int parse_frame(void *data, void *data_end, __u32 len, struct packet *pkt)
{
	struct ethhdr *eth = data;
	__be16 proto;
	__u32 off;
	int i;

	pkt->len = len;
	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	pkt->l2_multicast = eth->h_dest[0] & 1;
	proto = eth->h_proto;
	off = sizeof(*eth);
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return PARSE_MALFORMED;
		proto = vh->encap_proto;
		off += sizeof(*vh);
	}
	pkt->l3_off = off;
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, pkt);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(data, data_end, pkt);
	return PARSE_NOT_IP;
}

/*
 * The parsers of the two hooks; returns enum parse_result. Global functions:
 * the verifier walks their many paths once, instead of carrying each of them
 * through the rest of the program.
 */
__noinline int parse_xdp(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (!pkt)
		return PARSE_MALFORMED;
	/* A jumbo frame comes in fragments (xdp.frags): the headers are read
	 * from the first, the lengths checked against the whole frame. Headers
	 * that run past the first fragment make the frame malformed. */
	return parse_frame(data, data_end, bpf_xdp_get_buff_len(ctx), pkt);
}

/* Headers the skb parser wants in the linear area: Ethernet, two VLAN tags,
 * IPv6 with a few extension headers, L4 and an ICMP quote. */
#define SKB_PULL_LEN 256

__noinline int parse_skb(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 want = skb->len < SKB_PULL_LEN ? skb->len : SKB_PULL_LEN;
	void *data, *data_end;

	if (!pkt)
		return PARSE_MALFORMED;
	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	/* skb->len counts paged data too: what the IP length fields describe. */
	return parse_frame(data, data_end, skb->len, pkt);
}

#endif
