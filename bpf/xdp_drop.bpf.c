// SPDX-License-Identifier: GPL-2.0
/* The baseline every benchmark is a ratio to: drop everything, do nothing. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_drop_all(struct xdp_md *ctx)
{
	return XDP_DROP;
}
