/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The owner of a packet bpfwall_egress judges: the cgroup (v2) and the uid
 * of the socket that sent it, as the classes that rules with `cgroup` and
 * `user` read. A rule naming a cgroup matches it and every cgroup below, so
 * a socket's class is that of its deepest ancestor some rule names; the
 * loader gives each named cgroup a class that holds the rules naming it or
 * any cgroup above it.
 */
#ifndef BPFWALL_OWNER_H
#define BPFWALL_OWNER_H

#include <linux/bpf.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>

#include "shared.h"
#include "cfg.h"
#include "classify.h"

/* cgroup id (its directory's inode on cgroup2) -> class. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u32);
} cgroup_class SEC(".maps");

/*
 * The named cgroups by path ("/a/b", NUL-padded) -> class: the cgroup
 * tracepoint programs give a cgroup made after the apply its class in
 * cgroup_class. Sized by the loader.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct bpfwall_cgroup_path);
	__type(value, __u32);
} cgroup_wanted SEC(".maps");

/*
 * The few members of the kernel's structs the tracepoints need, placed by
 * CO-RE from the running kernel's BTF (the ___bpfwall suffix is dropped in
 * the match).
 */
struct kernfs_node___bpfwall {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root___bpfwall {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup___bpfwall {
	struct kernfs_node___bpfwall *kn;
	struct cgroup_root___bpfwall *root;
} __attribute__((preserve_access_index));

/* cgroup v2 is the kernel's default hierarchy, id 0; the v1 ones (a hybrid
 * host's name=systemd among them) number their cgroups on their own. */
#define CGROUP2_HIERARCHY_ID 0

/* A cgroup at path came to be: if a rule names it, its id takes the class. */
static __always_inline int cgroup_named(struct cgroup___bpfwall *cgrp, const char *path)
{
	struct bpfwall_cgroup_path key = {};
	__u64 id;
	__u32 *cls;

	if (cgrp->root->hierarchy_id != CGROUP2_HIERARCHY_ID)
		return 0;
	id = cgrp->kn->id;
	if (bpf_probe_read_kernel_str(key.path, sizeof(key.path), path) < 0)
		return 0;
	cls = bpf_map_lookup_elem(&cgroup_wanted, &key);
	if (cls)
		bpf_map_update_elem(&cgroup_class, &id, cls, BPF_ANY);
	return 0;
}

static __always_inline int cgroup_gone(struct cgroup___bpfwall *cgrp)
{
	__u64 id;

	if (cgrp->root->hierarchy_id != CGROUP2_HIERARCHY_ID)
		return 0;
	id = cgrp->kn->id;
	bpf_map_delete_elem(&cgroup_class, &id);
	return 0;
}

/* uid -> class. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} user_class SEC(".maps");

/*
 * The class of the deepest named cgroup above (or at) the socket's, or with
 * skb 0 (a constant) the current task's: where connect() and sendmsg() are
 * judged, before there is a packet.
 */
static __always_inline __u32 cgroup_class_of(struct __sk_buff *skb)
{
	__u32 levels = cfg.cgroup_levels;
	int level;

	for (level = BPFWALL_CGROUP_MAX_LEVEL; level > 0; level--) {
		__u64 id;
		__u32 *cls;

		if (!(levels & (1u << level)))
			continue;
		id = skb ? bpf_skb_ancestor_cgroup_id(skb, level)
			 : bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue; /* the cgroup is not this deep */
		cls = bpf_map_lookup_elem(&cgroup_class, &id);
		if (cls)
			return *cls;
	}
	return cfg.cgroup_default_class;
}

static __always_inline __u32 user_class_of(__u32 uid)
{
	__u32 *cls = bpf_map_lookup_elem(&user_class, &uid);

	return cls ? *cls : cfg.user_default_class;
}

/*
 * What a test run asks for in cb[] (shared.h) with BPFWALL_RUN_REQUEST set,
 * or 0 for real traffic.
 */
static __always_inline __u32 run_request(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk || skb->cb[0] != BPFWALL_RUN_MAGIC)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->type != 0)
		return 0;
	return skb->cb[2] | BPFWALL_RUN_REQUEST;
}

/*
 * Writes into rule_allow the rules an owner of these classes lets through:
 * those of its cgroup's class AND its uid's. A copy of the bitvectors (a
 * word per 64 rules), paid only by rule sets that name owners; classify()
 * then needs nothing more.
 */
static __always_inline void allow_owner(__u32 cgroup, __u32 user)
{
	const __u32 n = cfg.n_summary + cfg.n_words;
	const __u64 *by_cgroup, *by_user;
	__u64 *allow;
	__u32 zero = 0, w;

	allow = bpf_map_lookup_elem(&rule_allow, &zero);
	by_cgroup = bpf_map_lookup_elem(&bitvectors, &cgroup);
	by_user = bpf_map_lookup_elem(&bitvectors, &user);
	if (!allow || !by_cgroup || !by_user)
		return;
	for (w = 0; w < BPFWALL_MAX_SUMMARY + BPFWALL_MAX_WORDS && w < n; w++) {
		__u64 word = ~0ULL;

		if (cfg.fields & (1 << BPFWALL_F_CGROUP))
			word &= by_cgroup[w];
		if (cfg.fields & (1 << BPFWALL_F_USER))
			word &= by_user[w];
		allow[w] = word;
	}
}

/*
 * The rules the owner of the packet skb lets through, into rule_allow. A
 * packet without a socket (forwarded, or the kernel's own) takes the default
 * classes, which hold only the rules without `cgroup` and `user`.
 * request: run_request(skb).
 */
static __always_inline void note_owner(struct __sk_buff *skb, __u32 request)
{
	__u32 cgroup = cfg.cgroup_default_class, user = cfg.user_default_class;

	if (!(cfg.fields & OWNER_FIELDS))
		return;
	if (skb->sk && !(request & BPFWALL_RUN_NO_SOCKET)) {
		if (cfg.fields & (1 << BPFWALL_F_CGROUP))
			cgroup = cgroup_class_of(skb);
		if (cfg.fields & (1 << BPFWALL_F_USER))
			user = user_class_of(request ? skb->cb[1] : bpf_get_socket_uid(skb));
	}
	allow_owner(cgroup, user);
}

/* The same for the task that calls connect() or sendmsg(). */
static __always_inline void note_current_owner(void)
{
	__u32 cgroup = cfg.cgroup_default_class, user = cfg.user_default_class;

	if (!(cfg.fields & OWNER_FIELDS))
		return;
	if (cfg.fields & (1 << BPFWALL_F_CGROUP))
		cgroup = cgroup_class_of(0);
	if (cfg.fields & (1 << BPFWALL_F_USER))
		user = user_class_of((__u32)bpf_get_current_uid_gid());
	allow_owner(cgroup, user);
}

#endif
