// SPDX-License-Identifier: GPL-2.0
/*
 * bpfwall-flood: the lab's traffic generator, for the tests and the benchmark.
 *
 * It sends frames out of one interface through an AF_PACKET transmit ring
 * (PACKET_TX_RING, qdisc bypassed), which every kernel has; live-frame test
 * runs (BPF_F_TEST_XDP_LIVE_FRAMES) are refused by some, and those remain an
 * option of the Python side only where a probe finds them.
 *
 *   bpfwall-flood --dev IF --frames FILE [--netns PATH] [--spoof | --sources FILE]
 *                 [--count N] [--seconds S] [--rate PPS] [--cpu N]
 *
 * FILE holds the frames to send in turn, each as a 2-byte little-endian length
 * and its bytes. --spoof gives each IPv4 frame a random source in
 * 10.200.16.0-10.200.255.255 (the lab's range, clear of its real addresses)
 * and a random source port; --sources takes a file of IPv4 addresses (4 bytes
 * each, network order) and gives each frame one of them at random. Checksums
 * are kept right. It stops after N frames, S seconds, or SIGINT/SIGTERM, and
 * prints {"sent": N, "seconds": S} on its standard output.
 *
 * The frames are sent from the calling CPU, and a veth's receiving side runs in
 * the softirq that the send raises on that same CPU: --cpu N pins both.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAMES    16
#define MAX_FRAME_LEN 9216
#define RING_BYTES    (4u << 20)
#define BLOCK_BYTES   (1u << 16)
#define ETH_HLEN_     14
#define SPOOF_NET     0x0ac80000u /* 10.200.0.0 */
#define SPOOF_MIN_3RD 16

struct frame {
	uint16_t len;
	uint8_t *data;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "bpfwall-flood: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "bpfwall-flood: %s\n", msg);
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	/* xorshift64*: fast, and random enough to spread sources over tables */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* RFC 1624: a checksum after one 16-bit word of what it covers changed. */
static uint16_t csum_replace(uint16_t check, uint16_t old, uint16_t new)
{
	uint32_t sum = (uint16_t)~check + (uint16_t)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		die("malloc");
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);

		if (n <= 0)
			die(path);
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

static int load_frames(const char *path, struct frame *frames)
{
	size_t len, off = 0;
	uint8_t *buf = read_file(path, &len);
	int n = 0;

	while (off + 2 <= len) {
		uint16_t flen = buf[off] | buf[off + 1] << 8;

		off += 2;
		if (n == MAX_FRAMES || flen < ETH_HLEN_ || flen > MAX_FRAME_LEN || off + flen > len)
			fail("frames file: a frame is too short, too long, cut off, or one too "
			     "many");
		frames[n].len = flen;
		frames[n].data = buf + off;
		off += flen;
		n++;
	}
	if (!n || off != len)
		fail("frames file: no frames, or bytes left over after the last");
	return n;
}

/* Where the IPv4 header of an untagged Ethernet frame is, or NULL. */
static uint8_t *ipv4_of(uint8_t *f, uint16_t len)
{
	if (len < ETH_HLEN_ + 20 || f[12] != 0x08 || f[13] != 0x00 || f[ETH_HLEN_] != 0x45)
		return NULL;
	return f + ETH_HLEN_;
}

/*
 * Sets the IPv4 source (network order) and, when sport >= 0, the source port
 * (host order), keeping the IP checksum and the TCP or UDP one right.
 */
static void rewrite_source(uint8_t *f, uint16_t len, uint32_t saddr, int sport)
{
	uint8_t *ip = ipv4_of(f, len);
	uint8_t *l4;
	uint16_t *check = NULL, old[2], new[2];
	int i;

	if (!ip)
		return;
	l4 = ip + 20;
	if (ip[9] == IPPROTO_TCP && l4 + 20 <= f + len)
		check = (uint16_t *)(l4 + 16);
	else if (ip[9] == IPPROTO_UDP && l4 + 8 <= f + len)
		check = *(uint16_t *)(l4 + 6) ? (uint16_t *)(l4 + 6) : NULL;
	memcpy(old, ip + 12, 4);
	memcpy(new, &saddr, 4);
	memcpy(ip + 12, &saddr, 4);
	for (i = 0; i < 2; i++) {
		*(uint16_t *)(ip + 10) = csum_replace(*(uint16_t *)(ip + 10), old[i], new[i]);
		if (check)
			*check = csum_replace(*check, old[i], new[i]);
	}
	if (sport >= 0 && (ip[9] == IPPROTO_TCP || ip[9] == IPPROTO_UDP)) {
		uint16_t oldp, newp = htons((uint16_t)sport);

		memcpy(&oldp, l4, 2);
		memcpy(l4, &newp, 2);
		if (check)
			*check = csum_replace(*check, oldp, newp);
	}
}

static void enter_netns(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die(path);
	if (setns(fd, CLONE_NEWNET) < 0)
		die("setns");
	close(fd);
}

static void usage(void)
{
	fputs("usage: bpfwall-flood --dev IF --frames FILE [--netns PATH] [--spoof | --sources "
	      "FILE]\n"
	      "                     [--count N] [--seconds S] [--rate PPS] [--cpu N]\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"dev", required_argument, 0, 'd'},	    {"frames", required_argument, 0, 'f'},
	    {"netns", required_argument, 0, 'n'},   {"spoof", no_argument, 0, 'p'},
	    {"sources", required_argument, 0, 's'}, {"count", required_argument, 0, 'c'},
	    {"seconds", required_argument, 0, 't'}, {"rate", required_argument, 0, 'r'},
	    {"cpu", required_argument, 0, 'u'},	    {0, 0, 0, 0},
	};
	const char *dev = NULL, *frames_path = NULL, *sources_path = NULL;
	struct frame frames[MAX_FRAMES];
	uint32_t *sources = NULL;
	size_t n_sources = 0;
	unsigned long long count = 0, sent = 0;
	double seconds = 0, rate = 0, t0, elapsed;
	int spoof = 0, cpu = -1, n_frames, opt, fd, version = TPACKET_V2, one = 1;
	unsigned int frame_size, n_slots, slot = 0, batch;
	struct tpacket_req req;
	struct sockaddr_ll sll;
	uint8_t *ring;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 'f':
			frames_path = optarg;
			break;
		case 'n':
			enter_netns(optarg);
			break;
		case 'p':
			spoof = 1;
			break;
		case 's':
			sources_path = optarg;
			break;
		case 'c':
			count = strtoull(optarg, NULL, 10);
			break;
		case 't':
			seconds = atof(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'u':
			cpu = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (!dev || !frames_path || optind != argc || (spoof && sources_path) || rate < 0 ||
	    seconds < 0)
		usage();
	n_frames = load_frames(frames_path, frames);
	if (sources_path) {
		size_t len;

		sources = read_file(sources_path, &len);
		n_sources = len / 4;
		if (!n_sources || len % 4)
			fail("sources file: not a whole number of IPv4 addresses");
	}
	rng_state ^= (uint64_t)getpid() << 32 ^ (uint64_t)(now_s() * 1e9);
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("sched_setaffinity");
	}
	prctl(PR_SET_TIMERSLACK, 1); /* pacing sleeps of tens of microseconds */

	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* protocol 0: it receives nothing */
	if (fd < 0)
		die("socket(AF_PACKET)");
	if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) < 0)
		die("PACKET_VERSION");
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)); /* best effort */
	/* A slot holds the tpacket header and the largest frame, in a power of two. */
	frame_size = TPACKET_ALIGNMENT;
	for (opt = 0; opt < n_frames; opt++)
		while (frame_size < TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) + frames[opt].len)
			frame_size <<= 1;
	memset(&req, 0, sizeof(req));
	req.tp_block_size = frame_size > BLOCK_BYTES ? frame_size : BLOCK_BYTES;
	req.tp_block_nr = RING_BYTES / req.tp_block_size;
	req.tp_frame_size = frame_size;
	req.tp_frame_nr = req.tp_block_nr * (req.tp_block_size / frame_size);
	if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)) < 0)
		die("PACKET_TX_RING");
	n_slots = req.tp_frame_nr;
	ring = mmap(NULL, (size_t)req.tp_block_size * req.tp_block_nr, PROT_READ | PROT_WRITE,
		    MAP_SHARED, fd, 0);
	if (ring == MAP_FAILED)
		die("mmap");
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = if_nametoindex(dev);
	if (!sll.sll_ifindex)
		die(dev);
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		die("bind");

	/* A batch is at most 256 frames, or a tenth of a millisecond at the rate asked for. */
	batch = rate > 0 && rate < 2.56e6 ? (unsigned int)(rate / 1e4) + 1 : 256;
	t0 = now_s();
	while (!stopping) {
		unsigned int queued = 0;

		elapsed = now_s() - t0;
		if ((count && sent >= count) || (seconds > 0 && elapsed >= seconds))
			break;
		if (rate > 0 && sent > rate * elapsed) { /* ahead of the rate: wait for it */
			double ahead = sent / rate - elapsed;
			struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};

			nanosleep(&ts, NULL);
			continue;
		}
		while (queued < batch && (!count || sent + queued < count)) {
			struct tpacket2_hdr *hdr = (void *)(ring + (size_t)slot * frame_size);
			uint8_t *data =
			    (uint8_t *)hdr + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
			const struct frame *f = &frames[(sent + queued) % n_frames];

			if (hdr->tp_status == TP_STATUS_WRONG_FORMAT)
				fail("the kernel refused a frame as malformed");
			if (hdr->tp_status != TP_STATUS_AVAILABLE)
				break; /* the kernel still holds it: send what is queued first */
			memcpy(data, f->data, f->len);
			if (spoof)
				rewrite_source(
				    data, f->len,
				    htonl(SPOOF_NET |
					  (SPOOF_MIN_3RD + rnd() % (256 - SPOOF_MIN_3RD)) << 8 |
					  (rnd() & 0xff)),
				    1024 + rnd() % 60000);
			else if (sources)
				rewrite_source(data, f->len, sources[rnd() % n_sources], -1);
			hdr->tp_len = f->len;
			__atomic_store_n(&hdr->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
			slot = (slot + 1) % n_slots;
			queued++;
		}
		if (sendto(fd, NULL, 0, 0, NULL, 0) < 0 && errno != EINTR && errno != ENOBUFS)
			die("send");
		sent += queued;
		if (!queued)
			usleep(50); /* every slot still in flight */
	}
	elapsed = now_s() - t0;
	printf("{\"sent\": %llu, \"seconds\": %.6f}\n", sent, elapsed);
	return 0;
}
