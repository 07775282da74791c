/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Egress `reject`: a local process that sends to a rejected destination is
 * refused at once, as by nftables' output reject. The packet it sent becomes,
 * in place, the answer the destination would have given (a TCP RST, or an
 * ICMP (v6) port unreachable quoting the packet) and is redirected to the
 * ingress of the same device, where the local stack takes it: a connect()
 * fails with ECONNREFUSED, and so does a connected UDP socket's next call.
 * Nothing leaves the host. The answer goes to the host itself, so no budget
 * applies; the caller checked answer_due().
 */
#ifndef BPFWALL_REJECT_SKB_H
#define BPFWALL_REJECT_SKB_H

#include "parse.h"
#include "reject.h"

/* tcx verdicts (linux/pkt_cls.h): TC_ACT_SHOT, TC_ACT_REDIRECT. */
#define TCX_DROP     2
#define TCX_REDIRECT 7

/* The local stack takes the answer only with the host's own MAC as its
 * destination; a swap of the outgoing frame's gives it that. */
static __always_inline int to_local_stack(struct __sk_buff *skb)
{
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

static __always_inline int reject_tcp_skb(struct __sk_buff *skb, const struct packet *pkt)
{
	int len = write_tcp_reset((void *)(long)skb->data, (void *)(long)skb->data_end, pkt);

	if (len < 0 || bpf_skb_change_tail(skb, len, 0))
		return TCX_DROP;
	return to_local_stack(skb);
}

static __always_inline int reject_icmp_skb(struct __sk_buff *skb, const struct packet *pkt)
{
	__u32 grow = icmp_header_len(pkt);
	__u32 quote = icmp_quote_len(pkt);
	void *data, *data_end;
	struct ethhdr *eth;
	__u32 len;
	int iplen;

	/* Room goes in after the Ethernet header: a frame with VLAN tags in it
	 * would need them moved, and a local process's frames have none. */
	if (pkt->l3_off != ETH_HLEN)
		return TCX_DROP;
	/* The packet sent stays where it is and becomes the quote behind the
	 * new IP and ICMP headers. */
	if (bpf_skb_adjust_room(skb, grow, BPF_ADJ_ROOM_MAC, 0))
		return TCX_DROP;
	len = ETH_HLEN + grow + quote;
	if (bpf_skb_change_tail(skb, len, 0) || bpf_skb_pull_data(skb, len))
		return TCX_DROP;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TCX_DROP;
	swap_macs(eth);
	iplen = write_ip_header(data + ETH_HLEN, data_end, pkt,
				pkt->is_ipv6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, 8 + quote);
	if (iplen < 0 || write_port_unreachable(data + ETH_HLEN + iplen, data_end, pkt, quote))
		return TCX_DROP;
	return to_local_stack(skb);
}

/* Turns pkt into its refusal for the local stack: TCX_REDIRECT, or TCX_DROP
 * where it cannot. A global function, verified once. */
__noinline int reject_to_local(struct __sk_buff *skb, const struct packet *pkt)
{
	if (!pkt)
		return TCX_DROP;
	if (pkt->proto == IPPROTO_TCP)
		return reject_tcp_skb(skb, pkt);
	return reject_icmp_skb(skb, pkt);
}

#endif
