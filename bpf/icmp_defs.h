/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few ICMP and ICMPv6 numbers the data plane needs (RFC 792, RFC 4443),
 * defined here rather than taken from <linux/icmp.h>: that uapi header pulls
 * in <linux/if.h> and through it glibc's <sys/socket.h>, and glibc's headers
 * under `clang -target bpf` ask for gnu/stubs-32.h, which a fresh machine
 * does not have. BPF objects include kernel uapi headers only.
 */
#ifndef BPFWALL_ICMP_DEFS_H
#define BPFWALL_ICMP_DEFS_H

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4

#endif /* BPFWALL_ICMP_DEFS_H */
