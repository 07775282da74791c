"""The lab's sender (bpfwall-flood, an AF_PACKET transmit ring): every frame it says it sent
arrives, its rewritten frames carry right checksums and the sources asked for, and it stops
when told. It is what the flood tests and the benchmark stand on, on every kernel."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import time

from scapy.all import IP, TCP, UDP, Ether

from bpfwall import libbpf, netns
from bpfwall.lab import CLIENT_V4, SERVER_V4, Lab, lab_object_path
from bpfwall.sender import Sender

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; Python does not name it


def _frames(lab: Lab) -> list[bytes]:
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    return [bytes(eth / IP(src=CLIENT_V4, dst=SERVER_V4) / TCP(sport=1024, dport=8080, flags="S")),
            bytes(eth / IP(src=CLIENT_V4, dst=SERVER_V4) / UDP(sport=1024, dport=9999) / b"payload")]


@contextlib.contextmanager
def _capture(lab: Lab):
    """A raw socket on the server end that sees every frame arriving there."""
    with netns.enter(lab.server_ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((lab.server_if, 0))
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # read after the send: room for all
    s.settimeout(1.0)
    try:
        yield s
    finally:
        s.close()


def _received(s: socket.socket, n: int) -> list[Ether]:
    got = []
    with contextlib.suppress(TimeoutError):
        while len(got) < n:
            frame, addr = s.recvfrom(2048)
            if addr[2] != socket.PACKET_OUTGOING and frame[12:14] == b"\x08\x00":
                pkt = Ether(frame)
                if pkt[IP].src != SERVER_V4 and pkt[IP].dst == SERVER_V4:
                    got.append(pkt)
    return got


def _checksums_right(pkt: Ether) -> bool:
    """The checksums the frame carries equal those scapy computes for its contents."""
    fresh = Ether(bytes(pkt))
    for layer in (IP, TCP, UDP):
        if layer in fresh:
            del fresh[layer].chksum
    again = Ether(bytes(fresh))
    return all(pkt[layer].chksum == again[layer].chksum for layer in (IP, TCP, UDP) if layer in pkt)


def test_every_frame_sent_arrives_and_counts_agree():
    with Lab("send", peer="none") as lab:
        obj = libbpf.BpfObject(lab_object_path())
        obj.load()
        with netns.enter(lab.server_ns):
            link = libbpf.link_create(obj.prog_fd("xdp_drop_count"), netns.ifindex(lab.server_if),
                                      libbpf.BPF_XDP, libbpf.XDP_FLAGS_DRV_MODE)
        try:
            with Sender(lab.client_ns, lab.client_if, _frames(lab), cpu=0) as sender:
                sent = sender.send(count=50_000)
            values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
            libbpf.map_lookup(obj.map_fd("dropped"), ctypes.c_uint32(0), values)
            assert sent.packets == 50_000
            assert sum(values) == 50_000, "the receiving end's XDP program saw each frame once"
        finally:
            os.close(link)
            obj.close()


def test_spoofed_frames_carry_random_lab_sources_and_right_checksums():
    with Lab("send", peer="none") as lab, _capture(lab) as cap:
        with Sender(lab.client_ns, lab.client_if, _frames(lab), spoof=True) as sender:
            assert sender.send(count=200).packets == 200
        got = _received(cap, 200)
    assert len(got) == 200
    sources = {p[IP].src for p in got}
    # 10.200.16.0 to 10.200.255.255: the lab's range, clear of its real addresses
    assert all(a.startswith("10.200.") and int(a.split(".")[2]) >= 16 for a in sources)
    assert len(sources) > 100, "sources are drawn at random"
    assert len({p.sport for p in got}) > 100
    assert {TCP, UDP} <= {layer for p in got for layer in (TCP, UDP) if layer in p}
    assert all(_checksums_right(p) for p in got)


def test_sources_come_from_the_list_given():
    listed = [int(ipaddress.ip_address(f"192.0.2.{i}")) for i in range(1, 11)]
    with Lab("send", peer="none") as lab, _capture(lab) as cap:
        with Sender(lab.client_ns, lab.client_if, _frames(lab)[1:], sources=listed) as sender:
            sender.send(count=300)
        got = _received(cap, 300)
    assert len(got) == 300
    sources = {int(ipaddress.ip_address(p[IP].src)) for p in got}
    assert sources == set(listed)
    assert all(_checksums_right(p) for p in got)


def test_a_running_flood_stops_when_told_and_says_what_it_sent():
    with Lab("send", peer="none") as lab:
        with Sender(lab.client_ns, lab.client_if, _frames(lab), spoof=True) as sender:
            with sender.running(rate=20_000) as result:
                time.sleep(0.5)
        (sent,) = result
        assert sent.packets > 0 and sent.seconds > 0
        # paced: never more than the rate allows over the time it ran (one batch of slack)
        assert sent.packets <= 20_000 * sent.seconds + 256
