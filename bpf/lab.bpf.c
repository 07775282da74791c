// SPDX-License-Identifier: GPL-2.0
/*
 * Programs for the lab, never for a protected interface:
 * - xdp_pass_peer goes on the client end of a lab veth pair: a veth only
 *   wakes to take frames sent to it with XDP_TX (bpfwall's rejects) when it
 *   runs an XDP program itself.
 * - xdp_drop_all and tc_pass_all are the baselines benchmarks are ratios to.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_pass_peer(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop_all(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("tc")
int tc_pass_all(struct __sk_buff *skb)
{
	return -1; /* TCX_NEXT */
}
