// SPDX-License-Identifier: GPL-2.0
/*
 * Programs for the lab, never for a protected interface:
 * - xdp_pass_peer goes on the client end of a lab veth pair: a veth takes
 *   frames sent to it from XDP (bpfwall's rejects) only while it runs XDP or
 *   has GRO on; it also counts the backscatter of spoofed floods.
 * - xdp_drop_all and tc_pass_all are the baselines benchmarks are ratios to;
 *   xdp_drop_count is xdp_drop_all that also counts, for the flood benchmark.
 * - xdp_pass_all is the no-op beside which a TCP stream through bpfwall is
 *   measured; xdp_ref_blocklist is the least any blocklist filter does (one
 *   hash lookup of the source), the floor the blocklist floods compare with.
 * - xdp_inject and xdp_inject_cpumap hand the sender's frames to the lab as a
 *   NIC's driver would: the sender writes into a veth of its own, whose XDP
 *   program passes each frame through a cpumap to the receiving CPU, where the
 *   cpumap's program redirects it out of the lab's client end. The server end
 *   then gets XDP frames (no socket buffer yet), on a CPU of their own.
 * - net_rx_entry and net_rx_exit time each CPU's network receive softirq to
 *   the nanosecond, whatever context runs it: what a firewall costs the CPU
 *   that receives, beside the tick-sampled figure of /proc/stat.
 * - xdp_flood is a traffic generator where the kernel allows live-frame test
 *   runs: run with BPF_PROG_TEST_RUN in that mode on a lab interface, it sends
 *   every frame out of it (XDP_TX); xdp_flood_spoof does too, from a random
 *   source in SPOOF_NET. Elsewhere the lab sends with tools/flood.c.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/*
 * Spoofed sources: 10.200.16.0 to 10.200.255.255, inside the lab's range and
 * clear of its real addresses (10.200.0.0/24). Their SYN-ACKs and errors come
 * back to the client end, where xdp_pass_peer drops them as the Internet
 * would lose them: the attacker never sees that backscatter.
 */
#define SPOOF_NET_HI  0x0ac8 /* 10.200 */
#define SPOOF_MIN_3RD 16

char LICENSE[] SEC("license") = "GPL";

static __always_inline struct iphdr *ipv4_of(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return 0;
	return ip;
}

static __always_inline int spoofed(__be32 addr)
{
	__u32 a = bpf_ntohl(addr);

	return a >> 16 == SPOOF_NET_HI && (a >> 8 & 0xff) >= SPOOF_MIN_3RD;
}

/* Frames xdp_pass_peer took as backscatter: what a spoofed flood's victims got. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} backscatter SEC(".maps");

SEC("xdp.frags") /* the peer of a jumbo-frame lab too */
int xdp_pass_peer(struct xdp_md *ctx)
{
	struct iphdr *ip = ipv4_of(ctx);
	__u32 zero = 0;
	__u64 *n;

	if (ip && spoofed(ip->daddr)) {
		n = bpf_map_lookup_elem(&backscatter, &zero);
		if (n)
			*n += 1;
		return XDP_DROP; /* backscatter of a spoofed flood */
	}
	return XDP_PASS;
}

/* RFC 1624: a checksum after one 16-bit word of what it covers changed. */
static __always_inline __u16 csum_replace(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/*
 * The frame each run starts from. Live-frames mode recycles its pages with
 * whatever the last program wrote into them, and a firewall answering with
 * XDP_TX (a SYN cookie) rewrites them in place: so the generator restores
 * the frame from the template the current batch uses before spoofing it.
 */
#define TEMPLATE_BYTES 124

struct flood_template {
	__u32 len;
	__u8 data[TEMPLATE_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct flood_template);
} flood_templates SEC(".maps");

/* Index 0: the template of the current batch. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flood_current SEC(".maps");

static __always_inline int restore_template(struct xdp_md *ctx)
{
	__u32 zero = 0, *cur = bpf_map_lookup_elem(&flood_current, &zero);
	struct flood_template *t;
	__u32 len, have;

	if (!cur)
		return 0;
	t = bpf_map_lookup_elem(&flood_templates, cur);
	if (!t || !t->len)
		return 0; /* no template: spoof the frame as it is */
	len = t->len;
	if (len < 14 || len > TEMPLATE_BYTES)
		return -1;
	have = ctx->data_end - ctx->data;
	if (have != len && bpf_xdp_adjust_tail(ctx, (int)len - (int)have))
		return -1;
	return bpf_xdp_store_bytes(ctx, 0, t->data, len);
}

SEC("xdp")
int xdp_flood_spoof(struct xdp_md *ctx)
{
	void *data_end;
	struct iphdr *ip;
	__u32 r = bpf_get_prandom_u32();
	__u16 old_addr, new_addr, old_port, new_port;
	__u16 *l4_check = 0, *l4_sport = 0;

	if (restore_template(ctx))
		return XDP_ABORTED;
	data_end = (void *)(long)ctx->data_end;
	ip = ipv4_of(ctx);
	if (!ip)
		return XDP_TX;
	new_addr = bpf_htons((SPOOF_MIN_3RD + (r & 0xffff) % (256 - SPOOF_MIN_3RD)) << 8 |
			     (r >> 8 & 0xff));
	new_port = bpf_htons(1024 + (r >> 16) % 60000);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)(ip + 1);

		if ((void *)(th + 1) > data_end)
			return XDP_TX;
		l4_check = &th->check;
		l4_sport = &th->source;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(ip + 1);

		if ((void *)(uh + 1) > data_end)
			return XDP_TX;
		l4_check = uh->check ? &uh->check : 0;
		l4_sport = &uh->source;
	}
	old_addr = ((__u16 *)&ip->saddr)[1];
	((__u16 *)&ip->saddr)[1] = new_addr;
	ip->check = csum_replace(ip->check, old_addr, new_addr);
	if (l4_sport) {
		old_port = *l4_sport;
		*l4_sport = new_port;
		if (l4_check) {
			*l4_check = csum_replace(*l4_check, old_addr, new_addr);
			*l4_check = csum_replace(*l4_check, old_port, new_port);
		}
	}
	return XDP_TX;
}

/*
 * The sources of xdp_flood_sources (IPv4, network order), such as the
 * addresses of a blocklist, and in flood_source_count how many there are.
 */
#define FLOOD_SOURCES (1 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOOD_SOURCES);
	__type(key, __u32);
	__type(value, __u32);
} flood_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flood_source_count SEC(".maps");

/*
 * A flood from the listed sources, each frame from one picked at random: a
 * firewall's lookup of the source then reaches all over its tables, as a
 * flood from a million addresses does, instead of finding one path hot in
 * the cache. The UDP checksum is dropped (0: none), the IP one updated.
 */
SEC("xdp")
int xdp_flood_sources(struct xdp_md *ctx)
{
	__u32 zero = 0, i, *n = bpf_map_lookup_elem(&flood_source_count, &zero);
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_of(ctx);
	struct udphdr *uh;
	__u32 *src;
	__u16 *old, *new;

	if (!n || !*n || !ip)
		return XDP_TX;
	i = bpf_get_prandom_u32() % *n;
	src = bpf_map_lookup_elem(&flood_sources, &i);
	if (!src)
		return XDP_TX;
	old = (__u16 *)&ip->saddr;
	new = (__u16 *)src;
	ip->check = csum_replace(ip->check, old[0], new[0]);
	ip->check = csum_replace(ip->check, old[1], new[1]);
	ip->saddr = *src;
	uh = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_UDP && (void *)(uh + 1) <= data_end)
		uh->check = 0;
	return XDP_TX;
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

SEC("xdp.frags") /* the baseline of a jumbo-frame lab too */
int xdp_drop_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

	if (n)
		*n += 1;
	return XDP_DROP;
}

SEC("xdp.frags") /* as bpfwall's programs are, so that a stream meets the same path */
int xdp_pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/*
 * The reference blocklist: parse Ethernet and IPv4 or IPv6, look the source up
 * in one hash table (sized to the list before loading), drop on a hit.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __be32);
	__type(value, __u8);
} ref_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct in6_addr);
	__type(value, __u8);
} ref_v6 SEC(".maps");

SEC("xdp")
int xdp_ref_blocklist(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	__u64 *n;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || !bpf_map_lookup_elem(&ref_v4, &ip->saddr))
			return XDP_PASS;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || !bpf_map_lookup_elem(&ref_v6, &ip6->saddr))
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	n = bpf_map_lookup_elem(&dropped, &zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}

/* Index 0: the receiving CPU; index 1: the ifindex of the lab's client end. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} inject_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} inject_cpus SEC(".maps");

SEC("xdp")
int xdp_inject(struct xdp_md *ctx)
{
	__u32 zero = 0, *cpu = bpf_map_lookup_elem(&inject_conf, &zero);

	if (!cpu)
		return XDP_ABORTED;
	return bpf_redirect_map(&inject_cpus, *cpu, XDP_DROP);
}

SEC("xdp/cpumap")
int xdp_inject_cpumap(struct xdp_md *ctx)
{
	__u32 one = 1, *ifindex = bpf_map_lookup_elem(&inject_conf, &one);

	if (!ifindex)
		return XDP_DROP;
	return bpf_redirect(*ifindex, 0);
}

#define NET_RX_SOFTIRQ 3 /* include/linux/interrupt.h, not a uapi header */

/* Per CPU: index 0 when its NET_RX softirq began (0: not running), 1 its total ns. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} net_rx_time SEC(".maps");

SEC("raw_tracepoint/softirq_entry")
int net_rx_entry(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 began = 0;
	__u64 *t;

	if (ctx->args[0] != NET_RX_SOFTIRQ)
		return 0;
	t = bpf_map_lookup_elem(&net_rx_time, &began);
	if (t)
		*t = bpf_ktime_get_ns();
	return 0;
}

SEC("raw_tracepoint/softirq_exit")
int net_rx_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 began = 0, total = 1;
	__u64 *start, *sum;

	if (ctx->args[0] != NET_RX_SOFTIRQ)
		return 0;
	start = bpf_map_lookup_elem(&net_rx_time, &began);
	sum = bpf_map_lookup_elem(&net_rx_time, &total);
	if (!start || !sum || !*start)
		return 0;
	*sum += bpf_ktime_get_ns() - *start;
	*start = 0;
	return 0;
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
