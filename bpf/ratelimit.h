/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Rate limits, bans and the port-scan watch.
 *
 * A limit is a GCRA (the virtual-scheduling form of a token bucket): one
 * 64-bit "theoretical arrival time" per bucket, moved on by a compare-and-swap,
 * so CPUs share a bucket without a lock and the rate holds exactly. Rules
 * with a limit that a packet does not pass are skipped: classification goes
 * on from the next rule, as nftables' `limit` does.
 *
 * Bans live in scope-level LRU tables checked before anything else; an entry
 * expires by itself (the data plane deletes it when it sees it stale).
 */
#ifndef BPFWALL_RATELIMIT_H
#define BPFWALL_RATELIMIT_H

#include "shared.h"
#include "cfg.h"
#include "classify.h"
#include "parse.h"

/* Rule index -> action | (1 + param index) << PARAM_SHIFT. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, BPFWALL_MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} rule_action SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BPFWALL_MAX_PARAMS);
	__type(key, __u32);
	__type(value, struct bpfwall_rule_param);
} rule_params SEC(".maps");

/* The bucket of each rule-wide limit, then the reject budget's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BPFWALL_MAX_PARAMS + 1);
	__type(key, __u32);
	__type(value, __u64);
} limit_tat SEC(".maps");

/* The buckets of per-source limits: the least recently used go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFWALL_SOURCE_BUCKETS);
	__type(key, struct bpfwall_bucket_key);
	__type(value, __u64);
} source_tat SEC(".maps");

/* Bans by rules, and bans for port scans, each in a table of its own: forged
 * scans from a flood of sources churn their own table, never the rules'. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFWALL_MAX_BANS);
	__type(key, struct bpfwall_source);
	__type(value, struct bpfwall_ban);
} bans SEC(".maps"), scan_bans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFWALL_SCAN_SOURCES);
	__type(key, struct bpfwall_source);
	__type(value, struct bpfwall_scan_state);
} scan_sources SEC(".maps");

/* Test hook (index 0): non-zero replaces the clock of limits, bans and scans. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} test_clock SEC(".maps");

static __always_inline __u64 guard_clock(void)
{
	__u32 zero = 0;
	__u64 *fixed = bpf_map_lookup_elem(&test_clock, &zero);

	return fixed && *fixed ? *fixed : bpf_ktime_get_ns();
}

/* The unit a ban or a per-source bucket applies to: an IPv4 address or the
 * /64 of an IPv6 one (one host's share of a typical allocation). */
static __always_inline void source_of(const struct packet *pkt, struct bpfwall_source *src)
{
	if (pkt->is_ipv6) {
		__builtin_memcpy(src->addr, pkt->saddr, 8);
		src->is_ipv6 = 1;
	} else {
		__builtin_memcpy(src->addr, pkt->saddr, 4);
	}
}

/*
 * Pays cost from a bucket: 1 if it had room (and tat moved on), 0 if the packet
 * is over the rate. With dry_run (explain) the bucket is only looked at.
 */
static __always_inline int gcra_pay(__u64 *tat, __u64 now, __u64 cost, __u64 tolerance, int dry_run)
{
	int tries;

	for (tries = 0; tries < 4; tries++) {
		__u64 old = *(volatile __u64 *)tat;
		__u64 next = (old > now ? old : now) + cost;

		if (next - now > tolerance)
			return 0;
		if (dry_run)
			return 1;
		if (__sync_val_compare_and_swap(tat, old, next) == old)
			return 1;
	}
	return 0; /* lost the race four times: as good as over the rate */
}

/* The rule's rule_params entry and its index, or 0 when it has none. */
static __always_inline struct bpfwall_rule_param *param_of(__u32 rule, __u32 *index)
{
	__u32 *a = bpf_map_lookup_elem(&rule_action, &rule);

	if (!a || !(*a >> BPFWALL_PARAM_SHIFT))
		return 0;
	*index = (*a >> BPFWALL_PARAM_SHIFT) - 1;
	return bpf_map_lookup_elem(&rule_params, index);
}

/*
 * Whether rule matches a packet as far as its limit goes: 1 for a rule
 * without one. A global function, verified once, called only for rules that
 * have a limit or a ban.
 */
__noinline int limit_passes(const struct packet *pkt, __u32 rule, __u32 quiet)
{
	struct bpfwall_rule_param *prm;
	struct bpfwall_bucket_key key = {};
	__u64 *tat, cost, now, zero = 0;
	__u32 p = 0;
	int ok;

	if (!pkt)
		return 1;
	prm = param_of(rule, &p);
	if (!prm || !(prm->flags & BPFWALL_LIMIT_ON) || !prm->rate)
		return 1;
	now = guard_clock();
	cost = prm->flags & BPFWALL_LIMIT_BYTES ? pkt->len : 1;
	cost = cost * prm->period_ns / prm->rate;
	if (prm->flags & BPFWALL_LIMIT_PER_SOURCE) {
		source_of(pkt, &key.src);
		key.param = p;
		tat = bpf_map_lookup_elem(&source_tat, &key);
		if (!tat) {
			if (quiet) { /* a fresh bucket: room for one burst */
				ok = cost <= prm->tolerance_ns;
				return prm->flags & BPFWALL_LIMIT_OVER ? !ok : ok;
			}
			bpf_map_update_elem(&source_tat, &key, &zero, BPF_NOEXIST);
			tat = bpf_map_lookup_elem(&source_tat, &key);
		}
	} else {
		tat = bpf_map_lookup_elem(&limit_tat, &p);
	}
	if (!tat)
		return 0;
	ok = gcra_pay(tat, now, cost, prm->tolerance_ns, quiet);
	return prm->flags & BPFWALL_LIMIT_OVER ? !ok : ok;
}

/*
 * Whether the reject answer budget has room for one more answer to this
 * packet's source: its own bucket first (a single flooding source cannot
 * spend everyone's budget), then the bucket of all sources, as the kernel's
 * icmp_ratelimit and icmp_msgs_per_sec do. With quiet (explain) the buckets
 * are only looked at. A global function, called only for answers due.
 */
__noinline int reject_budget_allows(const struct packet *pkt, __u32 quiet)
{
	struct bpfwall_bucket_key key = {};
	__u32 slot = BPFWALL_REJECT_BUDGET;
	__u64 *tat, now, zero = 0;

	if (!pkt)
		return 0;
	if (!cfg.reject_cost_ns)
		return 1;
	now = guard_clock();
	if (cfg.reject_source_cost_ns) {
		source_of(pkt, &key.src);
		key.param = BPFWALL_REJECT_BUDGET;
		tat = bpf_map_lookup_elem(&source_tat, &key);
		if (!tat && !quiet) {
			bpf_map_update_elem(&source_tat, &key, &zero, BPF_NOEXIST);
			tat = bpf_map_lookup_elem(&source_tat, &key);
			if (!tat)
				return 0;
		}
		if (tat ? !gcra_pay(tat, now, cfg.reject_source_cost_ns,
				    cfg.reject_source_tolerance_ns, quiet)
			: cfg.reject_source_cost_ns > cfg.reject_source_tolerance_ns)
			return 0;
	}
	tat = bpf_map_lookup_elem(&limit_tat, &slot);
	return tat && gcra_pay(tat, now, cfg.reject_cost_ns, cfg.reject_tolerance_ns, quiet);
}

/* Sets or clears rule's bit in this CPU's rule_allow. */
static __always_inline void allow_rule(__u32 rule, int allowed)
{
	__u32 zero = 0;
	__u64 *bits = bpf_map_lookup_elem(&rule_allow, &zero);
	__u64 idx = cfg.n_summary + rule / 64;

	barrier_var(idx);
	if (!bits || idx >= cfg.n_summary + cfg.n_words)
		return;
	barrier_var(idx);
	if (allowed)
		bits[idx] |= 1ULL << (rule & 63);
	else
		bits[idx] &= ~(1ULL << (rule & 63));
}

/* Takes rule out of the next search of this packet. */
__noinline int refuse_rule(__u32 rule)
{
	allow_rule(rule, 0);
	return 0;
}

/* Lets every limited rule back in, for the next packet. */
__noinline int allow_all_rules(void)
{
	struct bpfwall_rule_param *prm;
	__u32 p;

	for (p = 0; p < BPFWALL_MAX_PARAMS && p < cfg.n_params; p++) {
		__u32 key =
		    p; /* its own slot: the counter must stay a register the verifier follows */

		barrier_var(key);
		prm = bpf_map_lookup_elem(&rule_params, &key);
		if (prm)
			allow_rule(prm->rule, 1);
	}
	return 0;
}

/* Whether table holds a ban of src in force; a stale one is removed. */
static __always_inline int banned_in(void *table, struct bpfwall_source *src)
{
	struct bpfwall_ban *ban = bpf_map_lookup_elem(table, src);

	if (!ban)
		return 0;
	if (ban->expires_ns > guard_clock())
		return 1;
	bpf_map_delete_elem(table, src);
	return 0;
}

/* Whether the packet's source is banned now: by a rule, or (while scans are
 * watched) for a scan. */
__noinline int is_banned(const struct packet *pkt)
{
	struct bpfwall_source src = {};

	if (!pkt)
		return 0;
	source_of(pkt, &src);
	return banned_in(&bans, &src) || (cfg.scan_ports && banned_in(&scan_bans, &src));
}

__noinline int ban_source(const struct packet *pkt, __u64 ban_ns, __u32 reason, __u32 rule)
{
	struct bpfwall_source src = {};
	struct bpfwall_ban ban = {};

	if (!pkt)
		return 0;
	source_of(pkt, &src);
	ban.since_ns = guard_clock();
	ban.expires_ns = ban.since_ns + ban_ns;
	ban.reason = reason;
	ban.generation = generation_no;
	ban.rule = rule;
	if (reason == BPFWALL_BAN_SCAN)
		return bpf_map_update_elem(&scan_bans, &src, &ban, BPF_ANY) == 0;
	return bpf_map_update_elem(&bans, &src, &ban, BPF_ANY) == 0;
}

/* The ban the rule's action asks for (its param holds ban_ns). */
__noinline int ban_by_rule(const struct packet *pkt, __u32 rule)
{
	struct bpfwall_rule_param *prm;
	__u32 p = 0;

	if (!pkt)
		return 0;
	prm = param_of(rule, &p);
	if (!prm)
		return 0;
	return ban_source(pkt, prm->ban_ns, BPFWALL_BAN_RULE, rule);
}

/*
 * Notes a packet the firewall refused on a port (a TCP SYN, or UDP): a source
 * that touches more than scan_ports distinct closed ports within the window
 * is banned. Returns 1 when this packet got its source banned. Distinct ports
 * are counted through a 256-bit filter, so two ports can share a bit and a
 * scan of many ports is counted slightly low; unlocked, so two CPUs can both
 * count one port. Both err towards not banning.
 */
__noinline int scan_note(const struct packet *pkt)
{
	struct bpfwall_source src = {};
	struct bpfwall_scan_state fresh = {}, *st;
	__u32 bit;
	__u64 now, mask;

	if (!pkt)
		return 0;
	source_of(pkt, &src);
	now = guard_clock();
	st = bpf_map_lookup_elem(&scan_sources, &src);
	if (!st) {
		fresh.window_start_ns = now;
		bpf_map_update_elem(&scan_sources, &src, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&scan_sources, &src);
		if (!st)
			return 0;
	}
	if (now - st->window_start_ns > cfg.scan_window_ns) {
		st->window_start_ns = now;
		st->seen[0] = st->seen[1] = st->seen[2] = st->seen[3] = 0;
		st->ports = 0;
	}
	bit = ((__u32)pkt->dport * 40503u) >> 8 & 255;
	mask = 1ULL << (bit & 63);
	if (st->seen[bit >> 6 & 3] & mask)
		return 0;
	st->seen[bit >> 6 & 3] |= mask;
	st->ports += 1;
	if (st->ports <= cfg.scan_ports)
		return 0;
	bpf_map_delete_elem(&scan_sources, &src);
	return ban_source(pkt, cfg.scan_ban_ns, BPFWALL_BAN_SCAN, BPFWALL_NO_RULE);
}

#endif
