// SPDX-License-Identifier: GPL-2.0
/*
 * The programs that stay attached. bpfwall_ingress (XDP) and bpfwall_egress
 * (tcx) of this object are linked to the interfaces once and never swapped:
 * each jumps to the generation in force, whose programs sit in a two-slot
 * program array per direction (slot = generation & 1). An apply fills the
 * idle slot and then writes the new generation number into `active`: one
 * map write puts the new rule set in force on every interface and in both
 * directions at once, so an apply killed at any moment leaves the old rule
 * set or the new one, never a mix. The old slot stays filled until the
 * apply is done (or confirmed), which also makes a rollback one write.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* tcx verdict (linux/pkt_cls.h): next program, or pass. */
#define TCX_NEXT -1

char LICENSE[] SEC("license") = "GPL";

/* The version of this object's programs and maps (dispatcher.ABI), written
 * when it is loaded: a dispatcher an older bpfwall made is made anew. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} abi SEC(".maps");

/* The generation in force (its number; its slot is the low bit). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} ingress_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} egress_gens SEC(".maps");

static __always_inline int active_slot(void)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&active, &zero);

	return gen && (*gen & 1);
}

/*
 * Two tail calls with constant keys rather than one with a computed key:
 * the JIT turns a constant-key tail call into a direct jump, and
 * bpf_tail_call_static keeps clang from merging the two into one.
 * An empty slot (a direction the rule set has no program for) passes.
 */
/* xdp.frags, as the generations' program it jumps to must be (a program
 * array holds programs of one kind). */
SEC("xdp.frags")
int bpfwall_ingress(struct xdp_md *ctx)
{
	if (active_slot())
		bpf_tail_call_static(ctx, &ingress_gens, 1);
	else
		bpf_tail_call_static(ctx, &ingress_gens, 0);
	return XDP_PASS;
}

SEC("tc")
int bpfwall_egress(struct __sk_buff *skb)
{
	if (active_slot())
		bpf_tail_call_static(skb, &egress_gens, 1);
	else
		bpf_tail_call_static(skb, &egress_gens, 0);
	return TCX_NEXT;
}

/*
 * The cgroup connect and sendmsg hooks, linked to the cgroup2 root while the
 * rule set in force judges connections there (egress rules with owners): the
 * same switch, so a connect() and the packets after it meet one rule set.
 * An empty slot lets the call go on.
 */
#define SOCKADDR_GENS(name)                            \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY); \
		__uint(max_entries, 2);                \
		__type(key, __u32);                    \
		__type(value, __u32);                  \
	} name SEC(".maps")

SOCKADDR_GENS(connect4_gens);
SOCKADDR_GENS(connect6_gens);
SOCKADDR_GENS(sendmsg4_gens);
SOCKADDR_GENS(sendmsg6_gens);

#define SOCKADDR_DISPATCH(hook)                                     \
	SEC("cgroup/" #hook)                                        \
	int bpfwall_##hook(struct bpf_sock_addr *ctx)               \
	{                                                           \
		if (active_slot())                                  \
			bpf_tail_call_static(ctx, &hook##_gens, 1); \
		else                                                \
			bpf_tail_call_static(ctx, &hook##_gens, 0); \
		return 1;                                           \
	}

SOCKADDR_DISPATCH(connect4)
SOCKADDR_DISPATCH(connect6)
SOCKADDR_DISPATCH(sendmsg4)
SOCKADDR_DISPATCH(sendmsg6)
