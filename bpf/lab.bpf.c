// SPDX-License-Identifier: GPL-2.0
/*
 * Programs for the lab, never for a protected interface:
 * - xdp_pass_peer goes on the client end of a lab veth pair: a veth only
 *   wakes to take frames sent to it with XDP_TX (bpfwall's rejects) when it
 *   runs an XDP program itself.
 * - xdp_drop_all and tc_pass_all are the baselines benchmarks are ratios to;
 *   xdp_drop_count is xdp_drop_all that also counts, for the flood benchmark.
 * - xdp_flood is the traffic generator: run with BPF_PROG_TEST_RUN in live
 *   frames mode on a lab interface, it sends every frame out of it (XDP_TX).
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

SEC("xdp")
int xdp_drop_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

	if (n)
		*n += 1;
	return XDP_DROP;
}

SEC("xdp")
int xdp_flood(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("tc")
int tc_pass_all(struct __sk_buff *skb)
{
	return -1; /* TCX_NEXT */
}
