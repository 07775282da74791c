// SPDX-License-Identifier: GPL-2.0
/*
 * bpfwall_ingress (XDP) and bpfwall_egress (tcx) judge every frame that
 * arrives on or leaves an interface: parse once, find the connection state,
 * classify against the generation's rule tables, count, act. Each apply
 * loads a fresh copy of this object per direction, with that direction's
 * tables, and swaps it onto the links in one step, so a packet is always
 * judged by exactly one rule set. The connection table is shared by both
 * directions and kept across generations.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "shared.h"
#include "parse.h"
#include "classify.h"
#include "conntrack.h"
#include "reject.h"
#include "reject_skb.h"
#include "log.h"
#include "ratelimit.h"
#include "syncookie.h"
#include "owner.h"
#include "sockaddr.h"

/* tcx verdict (linux/pkt_cls.h): the next program, or pass. */
#define TCX_NEXT -1

char LICENSE[] SEC("license") = "GPL";

/* ifindex -> the interface's block of counters (0: not one of the apply's),
 * and BPFWALL_IFACE_* flags. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* emptied by a copy in memory */
	__uint(max_entries, BPFWALL_IFINDEX_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} iface_slot SEC(".maps");

/* Block of BPFWALL_N_COUNTERS per interface slot; the loader sizes it for the
 * blocks in use (per-CPU slots are costly to allocate), so a block beyond
 * the map is never counted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BPFWALL_N_COUNTERS);
	__type(key, __u32);
	__type(value, struct bpfwall_counter);
} counters SEC(".maps");

static __always_inline void count(__u32 ifindex, __u32 slot, __u32 len, int quiet)
{
	struct bpfwall_counter *c;
	__u32 *block;

	if (quiet)
		return; /* a frame sent by explain is not traffic */
	block = ifindex < BPFWALL_IFINDEX_SLOTS ? bpf_map_lookup_elem(&iface_slot, &ifindex) : 0;
	if (block && (*block & BPFWALL_IFACE_BLOCK_MASK) < BPFWALL_MAX_IFACES)
		slot += (*block & BPFWALL_IFACE_BLOCK_MASK) * BPFWALL_N_COUNTERS;
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

/* An answer built in place leaves by the interface it came in on: XDP_TX, or
 * a redirect to the interface itself where iface_slot asks for one. A frame
 * explain sends keeps XDP_TX, the verdict it reports. */
static __always_inline int send_back(struct xdp_md *ctx, int quiet)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *flags;

	if (quiet || ifindex >= BPFWALL_IFINDEX_SLOTS)
		return XDP_TX;
	flags = bpf_map_lookup_elem(&iface_slot, &ifindex);
	if (flags && (*flags & BPFWALL_IFACE_ANSWER_REDIRECT))
		return bpf_redirect(ifindex, 0);
	return XDP_TX;
}

static __always_inline int act(struct xdp_md *ctx, const struct packet *pkt, __u32 action,
			       int quiet)
{
	if (action == BPFWALL_ACT_ACCEPT)
		return XDP_PASS;
	if (action == BPFWALL_ACT_SYNCOOKIE) {
		int verdict;

		if (syn_tuple_taken(ctx, pkt))
			return XDP_PASS;
		verdict = syncookie_answer(ctx, pkt);

		count(ctx->ingress_ifindex,
		      verdict == XDP_TX ? BPFWALL_CNT_SYNCOOKIE_SENT : BPFWALL_CNT_SYNCOOKIE_FAILED,
		      0, quiet);
		return verdict == XDP_TX ? send_back(ctx, quiet) : verdict;
	}
	if (action == BPFWALL_ACT_REJECT) {
		int verdict;

		if (!answer_due(pkt))
			return XDP_DROP;
		if (!reject_budget_allows(pkt, quiet)) {
			count(ctx->ingress_ifindex, BPFWALL_CNT_REJECT_SUPPRESSED, 0, quiet);
			return XDP_DROP;
		}
		verdict = reject_packet(ctx, pkt);
		count(ctx->ingress_ifindex,
		      verdict == XDP_TX ? BPFWALL_CNT_REJECT_SENT : BPFWALL_CNT_REJECT_FAILED, 0,
		      quiet);
		return verdict == XDP_TX ? send_back(ctx, quiet) : verdict;
	}
	return XDP_DROP;
}

/* never_ban's literal prefixes; IPv4 ones as IPv4-mapped IPv6 (::ffff:0:0/96). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1); /* sized by the loader */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bpfwall_lpm6_key);
	__type(value, __u8);
} never_ban SEC(".maps");

/* Whether never_ban covers the packet's source: then no ban touches it. A
 * global function, called only when a ban is about to be made. */
__noinline int never_banned(const struct packet *pkt)
{
	struct bpfwall_lpm6_key key = {.prefixlen = 128};
	__u32 j;

	if (!pkt)
		return 0;
	if (cfg.never_ban_literals) {
		if (pkt->is_ipv6) {
			__builtin_memcpy(key.addr, pkt->saddr, 16);
		} else {
			key.addr[10] = 0xff;
			key.addr[11] = 0xff;
			__builtin_memcpy(key.addr + 12, pkt->saddr, 4);
		}
		if (bpf_map_lookup_elem(&never_ban, &key))
			return 1;
	}
	for (j = 0; j < BPFWALL_MAX_NEVER_BAN_SETS && j < cfg.n_never_ban_sets; j++) {
		if (in_set(pkt, 0, cfg.never_ban_slots[j]))
			return 1;
	}
	return 0;
}

static __always_inline int may_ban(const struct packet *pkt)
{
	return !(cfg.never_ban_literals || cfg.n_never_ban_sets) || !never_banned(pkt);
}

static __always_inline int is_pure_syn(const struct packet *pkt)
{
	return pkt->has_l4 && pkt->proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST | TCPF_FIN)) == TCPF_SYN;
}

/*
 * The first rule that matches pkt and whose limit it passes: a rule with a
 * limit the packet is not within is taken out of the search (rule_allow),
 * and the search runs again. Each limited rule can be refused once, so
 * n_params searches at most; the refused rules are let back in after.
 */
static __always_inline __u32 first_passing_rule(struct packet *pkt, __u32 ifindex, __u32 src_hits,
						__u32 quiet)
{
	__u32 rule = classify(pkt, ifindex, src_hits);
	__u32 i;

	for (i = 0; i < BPFWALL_MAX_PARAMS && i < cfg.n_params; i++) {
		if (rule >= BPFWALL_MAX_RULES || limit_passes(pkt, rule, quiet))
			break;
		refuse_rule(rule);
		rule = classify(pkt, ifindex, src_hits);
	}
	if (i)
		allow_all_rules();
	return rule;
}

/*
 * The first of the leading blocklist rules (cfg.n_blocklists: rules that drop
 * by source set alone) whose sets hold the source, or BPFWALL_NO_RULE. No
 * other rule comes before them and nothing but the source decides them, so
 * their packets skip the connection table and the other fields: a flood from
 * a blocklist costs one set search, as in a filter that does nothing else.
 */
static __always_inline __u32 blocklist_rule(__u32 src_hits)
{
	__u32 j;

	for (j = 0; j < BPFWALL_MAX_FIELD_SETS && j < cfg.n_blocklists; j++) {
		if (src_hits & cfg.blocklist_sets[j])
			return j;
	}
	return BPFWALL_NO_RULE;
}

/*
 * Bans, connection state, classification, counting, and the flow update once
 * the packet is accepted; returns enum bpfwall_action and sets pkt->rule.
 * Shared by both programs. Inlined: with the parser global, only its three
 * outcomes reach here, and a call of its own cost 7 to 14 ns a packet.
 */
static __always_inline int judge(struct packet *pkt, __u32 ifindex, __u32 quiet)
{
	struct ct_lookup lk = {};
	__u32 src_hits = SETS_NOT_SEARCHED;
	__u32 rule = BPFWALL_NO_RULE, action, slot;
	__u64 now = 0;

	if (!pkt)
		return BPFWALL_ACT_DROP;
	if (cfg.bans_enabled && !cfg.direction && is_banned(pkt)) {
		pkt->rule = BPFWALL_BANNED_RULE;
		count(ifindex, BPFWALL_CNT_BANNED, pkt->len, quiet);
		count_drop(pkt, BPFWALL_ACT_DROP, quiet);
		return BPFWALL_ACT_DROP;
	}
	if (cfg.n_blocklists) {
		src_hits = sets_holding(pkt, 0, cfg.src_sets, cfg.n_src_sets);
		rule = blocklist_rule(src_hits);
	}
	if (rule == BPFWALL_NO_RULE) {
		if (cfg.ct_enabled) {
			/* Timeouts are seconds: the coarse clock (a tick's
			 * precision) is enough and, in a VM, a fifth of the
			 * per-packet cost cheaper. */
			now = bpf_ktime_get_coarse_ns();
			pkt->ct_state = ct_state_of(pkt, &lk, now);
			if (pkt->ct_state == BPFWALL_CT_INVALID && cfg.syn_rate && cookie_ack(pkt))
				pkt->ct_state = BPFWALL_CT_NEW; /* the kernel checks the cookie */
			if (pkt->ct_state == BPFWALL_CT_INVALID && !quiet)
				ct_stat(BPFWALL_CTS_INVALID);
		}
		rule = cfg.n_params ? first_passing_rule(pkt, ifindex, src_hits, quiet)
				    : classify(pkt, ifindex, src_hits);
	}
	if (rule < BPFWALL_MAX_RULES) {
		__u32 *a = bpf_map_lookup_elem(&rule_action, &rule);

		action = a ? *a & BPFWALL_ACTION_MASK : BPFWALL_ACT_DROP;
		slot = rule;
	} else {
		rule = BPFWALL_NO_RULE;
		action = cfg.direction ? cfg.policy_egress : cfg.policy_ingress;
		slot = cfg.direction ? BPFWALL_CNT_POLICY_EGRESS : BPFWALL_CNT_POLICY_INGRESS;
	}
	pkt->rule = rule;
	count(ifindex, slot, pkt->len, quiet);
	if (cfg.log_enabled && !quiet && rule != BPFWALL_NO_RULE)
		log_packet(pkt, rule, action, ifindex);
	count_drop(pkt, action, quiet);
	if (quiet)
		return action;
	if (action == BPFWALL_ACT_BAN && may_ban(pkt) && ban_by_rule(pkt, rule))
		count(ifindex, BPFWALL_CNT_BANS_ADDED, 0, 0);
	if (cfg.scan_ports && action != BPFWALL_ACT_ACCEPT && action != BPFWALL_ACT_BAN &&
	    pkt->has_l4 && (pkt->proto == IPPROTO_UDP || is_pure_syn(pkt)) && may_ban(pkt) &&
	    scan_note(pkt))
		count(ifindex, BPFWALL_CNT_SCAN_BANS, 0, 0);
	if (cfg.syn_rate && action == BPFWALL_ACT_ACCEPT && is_pure_syn(pkt) && syn_flooded(pkt))
		return BPFWALL_ACT_SYNCOOKIE; /* before ct: a spoofed SYN leaves no state */
	if (cfg.ct_enabled && action == BPFWALL_ACT_ACCEPT)
		ct_accepted(pkt, &lk, now);
	return action;
}

/* xdp.frags: jumbo frames (an MTU over a page) arrive in fragments, and a
 * program that says it can take them attaches natively to such interfaces. */
SEC("xdp.frags")
int bpfwall_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	struct bpfwall_explain *ex = (void *)(long)ctx->data_meta;
	struct packet pkt = {};
	__u32 action;
	int parsed, quiet;

	if ((void *)(ex + 1) > data ||
	    (ex->magic != BPFWALL_EXPLAIN_MAGIC && ex->magic != BPFWALL_TRACE_MAGIC))
		ex = 0;
	quiet = ex && ex->magic == BPFWALL_EXPLAIN_MAGIC;
	parsed = parse_xdp(ctx, &pkt);
	if (parsed == PARSE_NOT_IP) {
		count(ctx->ingress_ifindex, BPFWALL_CNT_NOT_IP, pkt.len, quiet);
		record(ex, BPFWALL_NO_RULE, BPFWALL_BY_NOT_IP, BPFWALL_ACT_ACCEPT);
		return XDP_PASS;
	}
	if (parsed == PARSE_MALFORMED) {
		count(ctx->ingress_ifindex, BPFWALL_CNT_MALFORMED, pkt.len, quiet);
		record(ex, BPFWALL_NO_RULE, BPFWALL_BY_MALFORMED, BPFWALL_ACT_DROP);
		return XDP_DROP;
	}
	action = judge(&pkt, ctx->ingress_ifindex, quiet);
	record(ex, pkt.rule,
	       pkt.rule == BPFWALL_NO_RULE	 ? BPFWALL_BY_POLICY
	       : pkt.rule == BPFWALL_BANNED_RULE ? BPFWALL_BY_BAN
						 : BPFWALL_BY_RULE,
	       action);
	return act(ctx, &pkt, action, quiet);
}

/* An explained test run's decision, back to the caller in cb[] (shared.h). */
static __always_inline void explained(struct __sk_buff *skb, int quiet, __u32 rule, __u32 decision,
				      __u32 action)
{
	if (!quiet)
		return;
	skb->cb[3] = rule;
	skb->cb[4] = decision << 16 | action;
}

/* A rejected packet becomes its refusal, handed to the local stack. */
SEC("tc")
int bpfwall_egress(struct __sk_buff *skb)
{
	__u32 request = run_request(skb);
	int quiet = !!(request & BPFWALL_RUN_EXPLAIN);
	struct packet pkt = {};
	int parsed, action, verdict;

	parsed = parse_skb(skb, &pkt);
	if (parsed == PARSE_NOT_IP) {
		count(skb->ifindex, BPFWALL_CNT_NOT_IP, skb->len, quiet);
		explained(skb, quiet, BPFWALL_NO_RULE, BPFWALL_BY_NOT_IP, BPFWALL_ACT_ACCEPT);
		return TCX_NEXT;
	}
	if (parsed == PARSE_MALFORMED) {
		count(skb->ifindex, BPFWALL_CNT_MALFORMED, skb->len, quiet);
		explained(skb, quiet, BPFWALL_NO_RULE, BPFWALL_BY_MALFORMED, BPFWALL_ACT_DROP);
		return TCX_DROP;
	}
	note_owner(skb, request);
	action = judge(&pkt, skb->ifindex, quiet);
	if (quiet) {
		explained(skb, quiet, pkt.rule,
			  pkt.rule == BPFWALL_NO_RULE ? BPFWALL_BY_POLICY : BPFWALL_BY_RULE,
			  action);
		return action == BPFWALL_ACT_ACCEPT ? TCX_NEXT : TCX_DROP;
	}
	if (action == BPFWALL_ACT_ACCEPT)
		return TCX_NEXT;
	if (action != BPFWALL_ACT_REJECT || !answer_due(&pkt))
		return TCX_DROP;
	verdict = reject_to_local(skb, &pkt);
	count(skb->ifindex,
	      verdict == TCX_REDIRECT ? BPFWALL_CNT_REJECT_SENT : BPFWALL_CNT_REJECT_FAILED, 0, 0);
	return verdict;
}

/*
 * A connect() or sendmsg() judged before its first packet (sockaddr.h): 1
 * lets it go on (to bpfwall_egress), 0 refuses it: EPERM for a drop,
 * ECONNREFUSED for a reject. A refusal counts and logs as the rule's packet
 * (of no bytes); a connection let through is counted by its packets.
 */
static __always_inline int judge_sockaddr(struct bpf_sock_addr *ctx, const int v6)
{
	struct packet pkt = {};
	__u32 rule, action, slot, udp;

	if (!judged_here(ctx) || sockaddr_packet(ctx, &pkt, v6) < 0)
		return 1;
	udp = pkt.proto == IPPROTO_UDP;
	note_current_owner();
	rule = udp ? classify_at_connect_udp(&pkt) : classify_at_connect_tcp(&pkt);
	if (rule < BPFWALL_MAX_RULES) {
		__u32 *a;

		if (unsure_at_connect(rule, udp))
			return 1;
		a = bpf_map_lookup_elem(&rule_action, &rule);
		if (!a)
			return 1;
		action = *a & BPFWALL_ACTION_MASK;
		slot = rule;
	} else {
		rule = BPFWALL_NO_RULE;
		action = cfg.policy_egress;
		slot = BPFWALL_CNT_POLICY_EGRESS;
	}
	if (action == BPFWALL_ACT_ACCEPT)
		return 1;
	if (action != BPFWALL_ACT_DROP && action != BPFWALL_ACT_REJECT)
		return 1; /* a ban is the packet's to make */
	count(0, slot, 0, 0);
	if (cfg.log_enabled && rule != BPFWALL_NO_RULE)
		log_packet(&pkt, rule, action, 0);
	if (action == BPFWALL_ACT_REJECT)
		bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/* The four hooks; v6: whether the hook's context has IPv6 addresses. */
#define SOCKADDR_PROGRAM(hook, v6)                    \
	SEC("cgroup/" #hook)                          \
	int bpfwall_##hook(struct bpf_sock_addr *ctx) \
	{                                             \
		return judge_sockaddr(ctx, v6);       \
	}

SOCKADDR_PROGRAM(connect4, 0)
SOCKADDR_PROGRAM(connect6, 1)
SOCKADDR_PROGRAM(sendmsg4, 0)
SOCKADDR_PROGRAM(sendmsg6, 1)

/*
 * The cgroup tracepoints, loaded with an egress program whose rules name
 * cgroups: a named cgroup made after the apply (systemd starts services
 * later) is matched from the moment it exists, one removed is forgotten.
 * cgroup v2 does not rename cgroups.
 */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(bpfwall_cgroup_mkdir, struct cgroup___bpfwall *cgrp, const char *path)
{
	return cgroup_named(cgrp, path);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(bpfwall_cgroup_rmdir, struct cgroup___bpfwall *cgrp, const char *path)
{
	return cgroup_gone(cgrp);
}
