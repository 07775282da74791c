// SPDX-License-Identifier: GPL-2.0
/*
 * bpfwall_ingress: the XDP program that judges every frame arriving on an
 * interface. Parse once, classify against the generation's rule tables,
 * count, act. Each apply loads a fresh copy of this object with its own
 * tables and swaps it onto the XDP links in one step, so a packet is always
 * judged by exactly one rule set.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "shared.h"
#include "parse.h"
#include "classify.h"
#include "reject.h"

char LICENSE[] SEC("license") = "GPL";

/* Rule index -> enum bpfwall_action. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BPFWALL_MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} rule_action SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BPFWALL_N_COUNTERS);
	__type(key, __u32);
	__type(value, struct bpfwall_counter);
} counters SEC(".maps");

static __always_inline void count(__u32 slot, __u32 len, int quiet)
{
	struct bpfwall_counter *c;

	if (quiet)
		return; /* a frame sent by explain is not traffic */
	c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

/* Writes the decision into a frame's explain metadata. Global (not inlined):
 * real traffic only pays the test of ex, and the struct lands in BTF. */
__noinline int explain_decision(struct bpfwall_explain *ex, __u32 rule, __u32 decision,
				__u32 action)
{
	if (!ex)
		return 0;
	ex->rule = rule;
	ex->decision = decision;
	ex->action = action;
	return 0;
}

static __always_inline void record(struct bpfwall_explain *ex, __u32 rule, __u32 decision,
				   __u32 action)
{
	if (ex)
		explain_decision(ex, rule, decision, action);
}

static __always_inline int act(struct xdp_md *ctx, const struct packet *pkt, __u32 action,
			       int quiet)
{
	if (action == BPFWALL_ACT_ACCEPT)
		return XDP_PASS;
	if (action == BPFWALL_ACT_REJECT) {
		int verdict = reject_packet(ctx, pkt);

		count(verdict == XDP_TX ? BPFWALL_CNT_REJECT_SENT : BPFWALL_CNT_REJECT_FAILED, 0,
		      quiet);
		return verdict;
	}
	return XDP_DROP;
}

SEC("xdp")
int bpfwall_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	struct bpfwall_explain *ex = (void *)(long)ctx->data_meta;
	__u32 ifindex = ctx->ingress_ifindex;
	struct packet pkt = {};
	__u32 rule, action;
	int parsed, quiet;

	if ((void *)(ex + 1) > data || ex->magic != BPFWALL_EXPLAIN_MAGIC)
		ex = 0;
	quiet = ex != 0;
	parsed = parse_packet(ctx, &pkt);
	if (parsed == PARSE_NOT_IP) {
		count(BPFWALL_CNT_NOT_IP, pkt.len, quiet);
		record(ex, BPFWALL_NO_RULE, BPFWALL_BY_NOT_IP, BPFWALL_ACT_ACCEPT);
		return XDP_PASS;
	}
	if (parsed == PARSE_MALFORMED) {
		count(BPFWALL_CNT_MALFORMED, pkt.len, quiet);
		record(ex, BPFWALL_NO_RULE, BPFWALL_BY_MALFORMED, BPFWALL_ACT_DROP);
		return XDP_DROP;
	}

	rule = classify(&pkt, ifindex);
	if (rule < BPFWALL_MAX_RULES) {
		__u32 *a = bpf_map_lookup_elem(&rule_action, &rule);

		action = a ? *a : BPFWALL_ACT_DROP;
		count(rule, pkt.len, quiet);
		record(ex, rule, BPFWALL_BY_RULE, action);
	} else {
		action = cfg.policy_ingress;
		count(BPFWALL_CNT_POLICY_INGRESS, pkt.len, quiet);
		record(ex, BPFWALL_NO_RULE, BPFWALL_BY_POLICY, action);
	}
	return act(ctx, &pkt, action, quiet);
}
