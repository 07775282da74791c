/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Rule classification by bitvectors over value classes (bpf-iptables' Linear
 * Bit Vector Search). For every field the compiler splits the value space
 * into classes whose values match the same rules. A packet maps each used
 * field's value to its class, ANDs the classes' rule bitvectors, and the
 * lowest set bit is the first matching rule. A summary word (one bit per
 * non-empty 64-rule word) lets the search skip words that are empty in any
 * field, so the cost follows the number of candidate words, not of rules.
 *
 * Bitvector layout, per class: n_summary summary words, then n_words words.
 */
#ifndef BPFWALL_CLASSIFY_H
#define BPFWALL_CLASSIFY_H

#include "shared.h"
#include "cfg.h"
#include "parse.h"

/*
 * The classification tables are mmapable: the loader writes a rule set into them as one
 * copy in memory, not a syscall per batch of elements. Lookups are the same inlined array
 * access either way.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, BPFWALL_CLASS_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} class_of SEC(".maps");

/* value_size and max_entries are set by the loader for each generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8);
} bitvectors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, BPFWALL_DIR_L1_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} dir_l1 SEC(".maps");

/* max_entries (256 a chunk) is set by the loader for each generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} dir_chunks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__type(key, struct bpfwall_lpm6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} src6 SEC(".maps"), dst6 SEC(".maps");

/*
 * The IPv6 networks of every CIDR set, and the elements that found no place
 * in the host tables, both copies, keyed by (slot * 2 + the low bit of its
 * version, prefix); the value is the element's prefix length.
 * Shared by the two directions of a generation and changed in place by
 * `bpfwall set`.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__type(key, struct bpfwall_set4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} set4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__type(key, struct bpfwall_set6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} set6 SEC(".maps");

/*
 * The single addresses and IPv4 networks of every CIDR set (struct
 * bpfwall_host4_entry): one entry an element where the tries keep two copies,
 * found in one or two cache lines, and written by the loader as one copy in
 * memory. max_entries is set by the loader: twice the sets' elements and room,
 * so that searches stay short, plus BPFWALL_HOST_PROBES. An element that
 * finds no place within BPFWALL_HOST_PROBES of its home goes into the trie.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpfwall_host4_entry);
} host4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpfwall_host6_entry);
} host6 SEC(".maps");

/*
 * The state of each set (struct bpfwall_set_state): one write of its version
 * switches a whole change in.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BPFWALL_MAX_SETS);
	__type(key, __u32);
	__type(value, struct bpfwall_set_state);
} set_version SEC(".maps");

/*
 * in_set()'s search, off its stack: the trie keys, and the element each host
 * table search looks for. in_set() runs three frames deep (a program,
 * classify(), in_set()) with 32 bytes left of the verifier's 512; kept in
 * registers across the table lookups, these would be spilled to the stack.
 */
struct set_search {
	struct bpfwall_set4_key k4;
	struct bpfwall_set6_key k6;
	__u32 at;			      /* the host table slot being read (a lookup key) */
	__u32 tag;			      /* BPFWALL_HOST_TAG of the element searched for */
	__u32 addr[4];			      /* its address, or IPv4 network (network order) */
	__u32 seed, version, lengths4, tries; /* the set's state, read once */
	__u32 slot;			      /* the set's (a lookup key) */
	__u32 is_ipv6;
	__u32 found; /* what search_network() found */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct set_search);
} set_search_scratch SEC(".maps");

/* The kernel's own map struct, read through BTF (CO-RE): a host table's size
 * is the loader's choice, so the search takes it from the table. */
struct bpf_map {
	__u32 max_entries;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* class */
} iface_class SEC(".maps");

/*
 * The rules a search may return, laid out as a bitvector (summary words all
 * ones): a rule whose limit refused the packet is cleared for the next search
 * and set again once the packet is judged. Where egress rules name owners,
 * bpfwall_egress first writes into it the rules the packet's owner allows
 * (owner.h). Per CPU, so packets never share it;
 * value_size is set by the loader, and the loader fills it with ones.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8);
} rule_allow SEC(".maps");

/* classify()'s IPv6 trie key, off its stack: with the limit loop's state
 * there, a key on the stack would push the call chain past 512 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpfwall_lpm6_key);
} lpm_scratch SEC(".maps");

/* The number of set bits of a word (SWAR): BPF has no popcount. */
static __always_inline __u64 popcount(__u64 y)
{
	y = y - ((y >> 1) & 0x5555555555555555ULL);
	y = (y & 0x3333333333333333ULL) + ((y >> 2) & 0x3333333333333333ULL);
	y = (y + (y >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (y * 0x0101010101010101ULL) >> 56;
}

/*
 * Index of the lowest set bit of a non-zero word. BPF has no count-trailing-
 * zeros, and branches here would multiply the verifier's states in the search
 * loop, so: popcount of the bits below the lowest set one.
 */
static __always_inline __u64 lowest_bit(__u64 x)
{
	return popcount((x & -x) - 1);
}

static __always_inline const __u64 *bitvector_of_slot(__u32 slot)
{
	__u32 *cls = bpf_map_lookup_elem(&class_of, &slot);

	if (!cls)
		return 0;
	return bpf_map_lookup_elem(&bitvectors, cls);
}

/*
 * The class of an address: trie is 0 for the source field, 2 for the
 * destination one.
 */
static __always_inline const __u64 *bitvector_of_addr(const struct packet *pkt, const __u8 *addr,
						      void *trie6, __u32 trie)
{
	__u32 bit = trie + pkt->is_ipv6;
	__u32 *cls;

	if (bit < 4 && (cfg.trie_root_only & (1 << bit))) {
		__u32 root = cfg.root_class[bit];

		return bpf_map_lookup_elem(&bitvectors, &root);
	}
	if (pkt->is_ipv6) {
		__u32 zero = 0;
		struct bpfwall_lpm6_key *key = bpf_map_lookup_elem(&lpm_scratch, &zero);

		if (!key)
			return 0;
		key->prefixlen = 128;
		__builtin_memcpy(key->addr, addr, 16);
		cls = bpf_map_lookup_elem(trie6, key);
	} else {
		/* Up to three array reads, which the verifier turns into plain loads. */
		__u32 k = (trie ? 65536 : 0) + ((__u32)addr[0] << 8 | addr[1]);

		cls = bpf_map_lookup_elem(&dir_l1, &k);
		if (cls && (*cls & BPFWALL_DIR_CHUNK)) {
			k = (*cls & ~BPFWALL_DIR_CHUNK) * 256 + addr[2];
			cls = bpf_map_lookup_elem(&dir_chunks, &k);
		}
		if (cls && (*cls & BPFWALL_DIR_CHUNK)) {
			k = (*cls & ~BPFWALL_DIR_CHUNK) * 256 + addr[3];
			cls = bpf_map_lookup_elem(&dir_chunks, &k);
		}
		if (cls && (*cls & BPFWALL_DIR_CHUNK))
			return 0; /* a broken generation: chunks end at the third level */
	}
	/* Every trie holds a /0 entry, so a miss means a broken generation. */
	if (!cls)
		return 0;
	return bpf_map_lookup_elem(&bitvectors, cls);
}

/* The first slot to search for an address of hash h: its high bits scaled to
 * the table's home slots (every slot but the last BPFWALL_HOST_PROBES). */
static __always_inline __u32 host_home(__u32 h, __u32 entries)
{
	if (entries <= BPFWALL_HOST_PROBES)
		return 0;
	return ((__u64)h * (entries - BPFWALL_HOST_PROBES)) >> 32;
}

/* Whether the IPv4 host table holds the element (q->tag, q->addr[0]) at
 * q->version. */
static __always_inline int host4_search(struct set_search *q)
{
	__u32 h = (q->seed ^ q->tag * BPFWALL_HOST_SLOT ^ q->addr[0]) * BPFWALL_HOST_MIX;
	struct bpfwall_host4_entry *e;

	q->at = host_home(h, ((struct bpf_map *)&host4)->max_entries);
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < BPFWALL_HOST_PROBES; i++, q->at++) {
		e = bpf_map_lookup_elem(&host4, &q->at);
		if (!e || !e->tag)
			return 0;
		/* A match that does not hold at the version may be one being
		 * rewritten: the search goes on, as elements are in the table
		 * once. */
		if (e->tag == q->tag && e->addr == q->addr[0] && e->since <= q->version &&
		    q->version < e->until)
			return 1;
	}
	return 0;
}

static __always_inline int host6_search(struct set_search *q)
{
	__u32 h = q->seed ^ q->tag * BPFWALL_HOST_SLOT;
	struct bpfwall_host6_entry *e;

	h = (h ^ q->addr[0]) * BPFWALL_HOST_MIX;
	h = (h ^ q->addr[1]) * BPFWALL_HOST_MIX;
	h = (h ^ q->addr[2]) * BPFWALL_HOST_MIX;
	h = (h ^ q->addr[3]) * BPFWALL_HOST_MIX;
	q->at = host_home(h, ((struct bpf_map *)&host6)->max_entries);
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < BPFWALL_HOST_PROBES; i++, q->at++) {
		e = bpf_map_lookup_elem(&host6, &q->at);
		if (!e || !e->tag)
			return 0;
		if (e->tag == q->tag && e->addr[0] == q->addr[0] && e->addr[1] == q->addr[1] &&
		    e->addr[2] == q->addr[2] && e->addr[3] == q->addr[3] &&
		    e->since <= q->version && q->version < e->until)
			return 1;
	}
	return 0;
}

struct network_search {
	struct set_search *q;
};

/* bpf_loop() callback: the packet's IPv4 network at one more of the set's
 * prefix lengths (the lowest left in q->lengths4), searched for. */
static long search_network(__u64 index, void *data)
{
	struct set_search *q = ((struct network_search *)data)->q;
	__u32 bit, plen;

	if (!q || !q->lengths4)
		return 1;
	bit = q->lengths4 & -q->lengths4;
	q->lengths4 ^= bit;
	plen = lowest_bit(bit);
	if (plen > 31)
		return 1;
	q->tag = BPFWALL_HOST_TAG(q->slot, plen);
	__builtin_memcpy(q->addr, q->k4.addr, 4);
	q->addr[0] &= __builtin_bswap32(plen ? ~0u << (32 - plen) : 0);
	q->found = host4_search(q);
	return q->found;
}

/*
 * Whether the packet's source (dst 0) or destination (dst 1) address is in
 * the set of slot: the address itself in the host table, then (IPv4) its
 * network at each prefix length the set has there, then the trie. A global
 * function: inlined eight times its keys would push classify()'s stack past
 * what the verifier allows.
 */
__noinline int in_set(const struct packet *pkt, __u32 dst, __u32 slot)
{
	struct bpfwall_set_state *state;
	struct set_search *q;
	__u32 zero = 0;

	if (!pkt)
		return 0;
	q = bpf_map_lookup_elem(&set_search_scratch, &zero);
	if (!q)
		return 0;
	q->slot = slot;
	q->is_ipv6 = pkt->is_ipv6;
	if (q->is_ipv6)
		__builtin_memcpy(q->k6.addr, dst ? pkt->daddr : pkt->saddr, 16);
	else
		__builtin_memcpy(q->k4.addr, dst ? pkt->daddr : pkt->saddr, 4);
	state = bpf_map_lookup_elem(&set_version, &q->slot);
	if (!state)
		return 0;
	/*
	 * The state is read once: every search answers for the same version
	 * of the set (the host entries' spans, the trie's copy).
	 */
	q->version = state->version;
	q->seed = state->seed;
	q->lengths4 = state->lengths4;
	q->tries = state->tries;
	if (q->is_ipv6) {
		q->k6.prefixlen = 32 + 128;
		q->k6.key_slot = q->slot * 2 + (q->version & 1);
		__builtin_memcpy(q->addr, q->k6.addr, 16);
		q->tag = BPFWALL_HOST_TAG(q->slot, 128);
		if (host6_search(q))
			return 1;
		return (q->tries & BPFWALL_SET_TRIE6) && bpf_map_lookup_elem(&set6, &q->k6) != 0;
	}
	q->k4.prefixlen = 32 + 32;
	q->k4.key_slot = q->slot * 2 + (q->version & 1);
	__builtin_memcpy(q->addr, q->k4.addr, 4);
	q->tag = BPFWALL_HOST_TAG(q->slot, 32);
	if (host4_search(q))
		return 1;
	/* bpf_loop: the verifier checks one search for every prefix length,
	 * where a loop of searches it would walk search by search. */
	if (q->lengths4) {
		struct network_search ctx = {.q = q};

		q->found = 0;
		bpf_loop(popcount(q->lengths4), search_network, &ctx, 0);
		if (q->found)
			return 1;
	}
	return (q->tries & BPFWALL_SET_TRIE4) && bpf_map_lookup_elem(&set4, &q->k4) != 0;
}

/* Bitmask of the field's sets (bit j: refs[j]) that hold addr; n is a
 * constant of the generation, so the verifier drops sets it does not have. */
static __always_inline __u32 sets_holding(const struct packet *pkt, __u32 dst,
					  const volatile struct bpfwall_set_ref *refs, __u32 n)
{
	__u32 hits = 0;

	if (n > 0 && in_set(pkt, dst, refs[0].slot))
		hits |= 1;
	if (n > 1 && in_set(pkt, dst, refs[1].slot))
		hits |= 2;
	if (n > 2 && in_set(pkt, dst, refs[2].slot))
		hits |= 4;
	if (n > 3 && in_set(pkt, dst, refs[3].slot))
		hits |= 8;
	return hits;
}

struct field_vectors {
	const __u64 *iface, *proto, *src, *dst, *sport, *dport, *flags, *icmp, *ct, *allow;
	__u32 src_sets, dst_sets; /* sets_holding() of each address */
};

_Static_assert(BPFWALL_MAX_FIELD_SETS == 4, "sets_holding() is written out for 4 sets");

/* Word i of the rules that name a set holding the address (the OR over hits). */
/*
 * Word i of the OR of the bitvectors of the sets in hits (bit j: the field's
 * j-th set) that hold the address. A global function with its own small
 * frame: inlined into every and_word() its spills would push classify()'s
 * stack past the verifier's limit. Called only when some set holds the address.
 */
__noinline __u64 sets_word(__u32 dst, __u32 hits, __u64 i)
{
	const __u32 n = cfg.n_summary + cfg.n_words;
	__u64 word = 0;
	__u32 j, key;

	for (j = 0; j < BPFWALL_MAX_FIELD_SETS; j++) {
		const __u64 *bits;

		if (!(hits & (1u << j)))
			continue;
		key = dst ? cfg.dst_sets[j].cls : cfg.src_sets[j].cls;
		bits = bpf_map_lookup_elem(&bitvectors, &key);
		barrier_var(i);
		if (!bits || i >= n)
			return 0;
		barrier_var(i);
		word |= bits[i];
	}
	return word;
}

#define OWNER_FIELDS ((1 << BPFWALL_F_CGROUP) | (1 << BPFWALL_F_USER))

/* Whether classify() ANDs rule_allow: rules with limits, or with owners. */
#define USES_RULE_ALLOW (cfg.n_params || (cfg.fields & OWNER_FIELDS))

/* AND of word i over every used field. Unused fields are constants false
 * to the verifier, so their branches vanish from the JITed program. */
static __always_inline __u64 and_word(const struct field_vectors *v, __u32 fields, __u64 i)
{
	__u64 acc = ~0ULL;

	if (fields & (1 << BPFWALL_F_IFACE))
		acc &= v->iface[i];
	if (fields & (1 << BPFWALL_F_PROTO))
		acc &= v->proto[i];
	if (fields & (1 << BPFWALL_F_SRC))
		acc &= v->src[i] | (v->src_sets ? sets_word(0, v->src_sets, i) : 0);
	if (fields & (1 << BPFWALL_F_DST))
		acc &= v->dst[i] | (v->dst_sets ? sets_word(1, v->dst_sets, i) : 0);
	if (fields & (1 << BPFWALL_F_SPORT))
		acc &= v->sport[i];
	if (fields & (1 << BPFWALL_F_DPORT))
		acc &= v->dport[i];
	if (fields & (1 << BPFWALL_F_TCPFLAGS))
		acc &= v->flags[i];
	if (fields & (1 << BPFWALL_F_ICMP))
		acc &= v->icmp[i];
	if (fields & (1 << BPFWALL_F_CT))
		acc &= v->ct[i];
	if (USES_RULE_ALLOW)
		acc &= v->allow[i];
	return acc;
}

#define ADDR_FIELDS ((1 << BPFWALL_F_SRC) | (1 << BPFWALL_F_DST))

/* classify()'s src_hits when the source's sets are not searched yet. */
#define SETS_NOT_SEARCHED 0xffffffffu

#define LOOKUP_FIELD(dst, expr)                 \
	do {                                    \
		(dst) = (expr);                 \
		if (!(dst))                     \
			return BPFWALL_NO_RULE; \
	} while (0)

/*
 * Index of the first rule that matches pkt and that rule_allow lets through,
 * or BPFWALL_NO_RULE. src_hits: sets_holding() of the source, where the
 * caller has it already, or SETS_NOT_SEARCHED. skip: fields (a constant)
 * that are not known and are left out of the search, so that any value of
 * them matches.
 */
static __always_inline int classify_fields(const struct packet *pkt, __u32 ifindex, __u32 src_hits,
					   const __u32 skip)
{
	const __u32 fields = cfg.fields & ~skip;
	const __u32 n_words = cfg.n_words;
	const __u32 n_summary = cfg.n_summary;
	struct field_vectors v = {};
	__u32 s, k;

	if (!pkt)
		return BPFWALL_NO_RULE;
	if (USES_RULE_ALLOW) {
		__u32 zero = 0;

		LOOKUP_FIELD(v.allow, bpf_map_lookup_elem(&rule_allow, &zero));
	}
	if (fields & (1 << BPFWALL_F_IFACE)) {
		__u32 *cls = bpf_map_lookup_elem(&iface_class, &ifindex);
		__u32 dflt = cfg.iface_default_class;

		LOOKUP_FIELD(v.iface, bpf_map_lookup_elem(&bitvectors, cls ? cls : &dflt));
	}
	if (fields & (1 << BPFWALL_F_PROTO))
		LOOKUP_FIELD(v.proto, bitvector_of_slot(BPFWALL_PROTO_BASE + pkt->is_ipv6 * 256 +
							pkt->proto));
	if (fields & ((1 << BPFWALL_F_SPORT) | (1 << BPFWALL_F_DPORT))) {
		int ports = pkt->has_l4 && proto_has_ports(pkt->proto);
		__u32 sport = ports ? pkt->sport : BPFWALL_PORT_ABSENT;
		__u32 dport = ports ? pkt->dport : BPFWALL_PORT_ABSENT;

		if (fields & (1 << BPFWALL_F_SPORT))
			LOOKUP_FIELD(v.sport, bitvector_of_slot(BPFWALL_SPORT_BASE + sport));
		if (fields & (1 << BPFWALL_F_DPORT))
			LOOKUP_FIELD(v.dport, bitvector_of_slot(BPFWALL_DPORT_BASE + dport));
	}
	if (fields & (1 << BPFWALL_F_TCPFLAGS)) {
		__u32 flags = pkt->has_l4 && pkt->proto == IPPROTO_TCP ? pkt->tcp_flags
								       : BPFWALL_TCPFLAGS_ABSENT;

		LOOKUP_FIELD(v.flags, bitvector_of_slot(BPFWALL_TCPFLAGS_BASE + flags));
	}
	if (fields & (1 << BPFWALL_F_ICMP)) {
		__u32 icmp = BPFWALL_ICMP_ABSENT;

		if (pkt->has_l4 && proto_is_icmp(pkt))
			icmp =
			    (__u32)pkt->is_ipv6 << 16 | (__u32)pkt->icmp_type << 8 | pkt->icmp_code;
		LOOKUP_FIELD(v.icmp, bitvector_of_slot(BPFWALL_ICMP_BASE + icmp));
	}

	if (fields & (1 << BPFWALL_F_CT))
		LOOKUP_FIELD(v.ct, bitvector_of_slot(BPFWALL_CT_BASE + (pkt->ct_state & 3)));

	/*
	 * The array lookups above are cheap, the trie lookups below are not: when
	 * the fields so far already leave no candidate word, stop here.
	 */
	if (n_summary == 1 && !and_word(&v, fields & ~ADDR_FIELDS, 0))
		return BPFWALL_NO_RULE;
	if (fields & (1 << BPFWALL_F_SRC)) {
		LOOKUP_FIELD(v.src, bitvector_of_addr(pkt, pkt->saddr, &src6, 0));
		/* Only blocklist rule sets hand hits in: for the others the
		 * verifier sees the search alone, as before blocklists (an
		 * unknown src_hits multiplies the paths it walks past its limit
		 * on large rule sets). Masked to the field's sets for the same
		 * reason. */
		v.src_sets = cfg.n_blocklists && src_hits != SETS_NOT_SEARCHED
				 ? src_hits & ((1u << BPFWALL_MAX_FIELD_SETS) - 1)
				 : sets_holding(pkt, 0, cfg.src_sets, cfg.n_src_sets);
	}
	if (fields & (1 << BPFWALL_F_DST)) {
		LOOKUP_FIELD(v.dst, bitvector_of_addr(pkt, pkt->daddr, &dst6, 2));
		v.dst_sets = sets_holding(pkt, 1, cfg.dst_sets, cfg.n_dst_sets);
	}

	for (s = 0; s < BPFWALL_MAX_SUMMARY && s < n_summary; s++) {
		__u64 candidates = and_word(&v, fields, s);

		for (k = 0; k < 64 && candidates; k++) {
			__u64 word = s * 64 + lowest_bit(candidates);
			__u64 idx = n_summary + word;
			__u64 hits;

			/* The verifier must see this bound on the very register
			 * that indexes the bitvectors; keep clang from copying it. */
			barrier_var(idx);
			if (idx >= n_summary + n_words)
				break;
			barrier_var(idx);
			hits = and_word(&v, fields, idx);
			if (hits)
				return word * 64 + lowest_bit(hits);
			candidates &= candidates - 1;
		}
	}
	return BPFWALL_NO_RULE;
}

/* classify_fields() of every field. A global function: the verifier checks
 * it once, not once per parser outcome. */
__noinline int classify(const struct packet *pkt, __u32 ifindex, __u32 src_hits)
{
	return classify_fields(pkt, ifindex, src_hits, 0);
}

#endif
