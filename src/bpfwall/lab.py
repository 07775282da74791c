"""A lab of two network namespaces joined by a veth pair, and real sockets inside them.

Used by `bpfwall demo`, the end-to-end tests and the benchmarks. Names carry
the process id so that two runs never collide, and closing the lab removes
the namespaces, the veth pair and every bpfwall pin of the server namespace,
whatever happened before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import subprocess
import threading
import time

from . import libbpf, netns, packets, transaction
from .scope import Scope

SERVER_V4, CLIENT_V4 = "10.200.0.1", "10.200.0.2"
SERVER_V6, CLIENT_V6 = "fd42:200::1", "fd42:200::2"
# What a send returns when the packet never leaves: an egress drop (tcx) is ENOBUFS.
LOCALLY_BLOCKED = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOBUFS, errno.EPERM)


def lab_object_path() -> str:
    return os.path.join(os.path.dirname(__file__), "bpf", "lab.bpf.o")


def _outcome(s: socket.socket, timeout: float, call) -> str:
    """What call() on socket s returns, or 'refused' or 'timeout'; s is closed after."""
    s.settimeout(timeout)
    try:
        return call()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    finally:
        s.close()


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Lab:
    """server namespace <-> client namespace over veth; bpfwall goes on the server side."""

    def __init__(self, tag: str = "lab", queues: int = 1, peer: str = "xdp", mtu: int | None = None) -> None:
        """queues > 1 gives each veth end that many queues, transmit queue i steered to
        CPU i, as a multi-queue NIC spreads flows over CPUs. peer: what the client end
        runs, which decides whether frames sent from XDP on the server end reach it:
        "xdp" a trivial XDP program (which also counts backscatter), "gro" no program
        but GRO on, "none" neither (a veth as made, such as a container's). mtu: of both
        ends (default the veth's 1500; 9000 makes a jumbo-frame lab)."""
        if peer not in ("xdp", "gro", "none"):
            raise ValueError(f"peer must be xdp, gro or none, not {peer!r}")
        self.peer = peer
        self.mtu = mtu
        pid = os.getpid()
        self.queues = queues
        self.server_ns = f"bpfwall-{tag}-{pid}-srv"
        self.client_ns = f"bpfwall-{tag}-{pid}-cli"
        self.server_if = f"bw{pid}s"
        self.client_if = f"bw{pid}c"
        self._servers: list[socket.socket] = []
        self._stop = threading.Event()
        self._peer_obj: libbpf.BpfObject | None = None
        self._peer_link: int | None = None

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> None:
        run("ip", "netns", "add", self.server_ns)
        run("ip", "netns", "add", self.client_ns)
        q = ("numtxqueues", str(self.queues), "numrxqueues", str(self.queues))
        run("ip", "link", "add", self.server_if, "netns", self.server_ns, *q, "type", "veth",
            "peer", "name", self.client_if, "netns", self.client_ns, *q)
        for ns, dev, v4, v6 in ((self.server_ns, self.server_if, SERVER_V4, SERVER_V6),
                                (self.client_ns, self.client_if, CLIENT_V4, CLIENT_V6)):
            run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            if self.mtu:
                run("ip", "-n", ns, "link", "set", dev, "mtu", str(self.mtu))
            run("ip", "-n", ns, "link", "set", dev, "up")
            for i in range(self.queues if self.queues > 1 else 0):
                run("ip", "netns", "exec", ns, "sh", "-c",
                    f"echo {1 << i:x} > /sys/class/net/{dev}/queues/tx-{i}/xps_cpus")
        if self.peer == "xdp":
            self._peer_obj = libbpf.BpfObject(lab_object_path())
            self._peer_obj.load()
            with netns.enter(self.client_ns):
                self._peer_link = libbpf.link_create(
                    self._peer_obj.prog_fd("xdp_pass_peer"), netns.ifindex(self.client_if),
                    libbpf.BPF_XDP, libbpf.XDP_FLAGS_DRV_MODE)
        elif self.peer == "gro":
            run("ip", "netns", "exec", self.client_ns, "ethtool", "-K", self.client_if, "gro", "on")
        self._warm_up()

    def backscatter(self) -> int:
        """Frames that reached the client end addressed to a spoofed source (the answers a
        spoofed flood's victims would get), counted by the client end's XDP program."""
        if self._peer_obj is None:
            return 0
        values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
        libbpf.map_lookup(self._peer_obj.map_fd("backscatter"), ctypes.c_uint32(0), values)
        return sum(values)

    def _warm_up(self, deadline_s: float = 5.0) -> None:
        """Resolves neighbours both ways, IPv4 and IPv6, so that the first probe of a test
        does not wait on neighbour discovery (about a second on a fresh IPv6 link)."""
        deadline = time.monotonic() + deadline_s
        for frm in ("client", "server"):
            for v6 in (False, True):
                while self.ping(v6, timeout=0.3, frm=frm) != "answered":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"lab: no {'IPv6' if v6 else 'IPv4'} ping from the {frm} side")

    def close(self) -> None:
        self._stop.set()
        if self._peer_link is not None:
            os.close(self._peer_link)
            self._peer_link = None
        if self._peer_obj is not None:
            self._peer_obj.close()
            self._peer_obj = None
        for s in self._servers:
            with contextlib.suppress(OSError):
                s.close()
        self._servers.clear()
        with contextlib.suppress(Exception):
            transaction.down(Scope(self.server_ns))
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _socket(ns: str, kind: int, v6: bool, proto: int = 0) -> socket.socket:
        """A socket of namespace ns: it stays there whichever namespace uses it later."""
        with netns.enter(ns):
            return socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind, proto)

    def _side(self, on: str) -> tuple[str, str, str]:
        """(namespace, own address v4, own address v6) of 'server' or 'client'."""
        if on == "server":
            return self.server_ns, SERVER_V4, SERVER_V6
        return self.client_ns, CLIENT_V4, CLIENT_V6

    def _peer(self, frm: str, v6: bool) -> tuple[str, str]:
        """(namespace to send from, address of the other side)."""
        ns = self._side(frm)[0]
        _, v4, v6addr = self._side("server" if frm == "client" else "client")
        return ns, v6addr if v6 else v4

    # --- servers, on either side -----------------------------------------------------------------

    def _listen(self, port: int, v6: bool, on: str, serve) -> None:
        """A listening TCP socket on one side, served by serve(sock) in a thread."""
        ns, a4, a6 = self._side(on)
        s = self._socket(ns, socket.SOCK_STREAM, v6)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a6 if v6 else a4, port))
        s.listen(64)
        s.settimeout(0.2)
        self._servers.append(s)
        threading.Thread(target=serve, args=(s,), daemon=True).start()

    def tcp_server(self, port: int, v6: bool = False, on: str = "server") -> None:
        """Accepts connections on port (of the server side, or the client side) and closes
        them after a greeting."""
        self._listen(port, v6, on, self._accept_loop)

    def _accept_loop(self, s: socket.socket, handle=None) -> None:
        """Accepts until the lab closes; handle(conn) serves each connection (default: greet, close)."""
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            if handle is not None:
                self._servers.append(conn)
                threading.Thread(target=handle, args=(conn,), daemon=True).start()
                continue
            with contextlib.suppress(OSError):
                conn.sendall(b"hello\n")
                conn.close()

    def tcp_echo_server(self, port: int, v6: bool = False, on: str = "server") -> None:
        """Echoes whatever each connection sends, for as long as it stays open."""
        self._listen(port, v6, on, lambda sock: self._accept_loop(sock, self._echo_conn))

    def _echo_conn(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                conn.sendall(data)

    def tcp_session(self, port: int, v6: bool = False, frm: str = "client", timeout: float = 2.0) -> socket.socket:
        """A connected TCP socket to the other side (the caller closes it)."""
        ns, addr = self._peer(frm, v6)
        s = self._socket(ns, socket.SOCK_STREAM, v6)
        s.settimeout(timeout)
        s.connect((addr, port))
        return s

    def udp_server(self, port: int, v6: bool = False, on: str = "server") -> None:
        """Echoes every datagram on port."""
        ns, a4, a6 = self._side(on)
        s = self._socket(ns, socket.SOCK_DGRAM, v6)
        s.bind((a6 if v6 else a4, port))
        s.settimeout(0.2)
        self._servers.append(s)
        threading.Thread(target=self._echo_loop, args=(s,), daemon=True).start()

    def _echo_loop(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, peer = s.recvfrom(65535)
                s.sendto(data, peer)
            except (TimeoutError, OSError):
                continue

    # --- clients on the client side ------------------------------------------------------------

    def tcp_connect(self, port: int, v6: bool = False, timeout: float = 1.0, frm: str = "client",
                    src: str | None = None) -> str:
        """'open', 'refused' (an RST came back) or 'timeout' (nothing came back). src: the
        address to send from, one of the side's (default: the kernel's choice)."""
        ns, addr = self._peer(frm, v6)
        s = self._socket(ns, socket.SOCK_STREAM, v6)

        def call() -> str:
            if src:
                s.bind((src, 0))
            s.connect((addr, port))
            return "open"

        return _outcome(s, timeout, call)

    def udp_query(self, port: int, v6: bool = False, timeout: float = 1.0, frm: str = "client",
                  src: str | None = None, size: int = 4) -> str:
        """'answered', 'refused' (ICMP port unreachable came back) or 'timeout'. size: of the
        datagram sent (the echo servers answer with the same)."""
        ns, addr = self._peer(frm, v6)
        s = self._socket(ns, socket.SOCK_DGRAM, v6)

        def call() -> str:
            if src:
                s.bind((src, 0))
            s.connect((addr, port))
            s.send(b"ping".ljust(size, b"."))
            s.recv(65535)
            return "answered"

        return _outcome(s, timeout, call)

    def tcp_exchange(self, port: int, size: int, v6: bool = False, timeout: float = 2.0,
                     frm: str = "client") -> str:
        """Sends size bytes to a tcp_echo_server and reads them back: 'echoed', 'refused' or
        'timeout'. With a large MTU the segments are as large as the frames allow."""
        ns, addr = self._peer(frm, v6)
        s = self._socket(ns, socket.SOCK_STREAM, v6)

        def call() -> str:
            s.connect((addr, port))
            s.sendall(bytes(size))
            got = 0
            while got < size:
                chunk = s.recv(65536)
                if not chunk:
                    return "timeout"
                got += len(chunk)
            return "echoed"

        return _outcome(s, timeout, call)

    def ping(self, v6: bool = False, timeout: float = 1.0, frm: str = "client") -> str:
        """One ICMP echo to the other side: 'answered' or 'timeout'."""
        proto, req, rep = (socket.IPPROTO_ICMPV6, 128, 129) if v6 else (socket.IPPROTO_ICMP, 8, 0)
        ns, addr = self._peer(frm, v6)
        s = self._socket(ns, socket.SOCK_RAW, v6, proto)
        ident = os.getpid() & 0xFFFF
        seq = int(time.monotonic() * 1000) & 0xFFFF
        msg = struct.pack("!BBHHH", req, 0, 0, ident, seq) + b"bpfwall"
        if not v6:  # the kernel fills the ICMPv6 checksum itself
            msg = msg[:2] + struct.pack("!H", packets.checksum(msg)) + msg[4:]
        deadline = time.monotonic() + timeout
        try:
            s.sendto(msg, (addr, 0))
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                data = s.recv(2048)
                icmp = data if v6 else data[(data[0] & 0xF) * 4 :]
                if len(icmp) >= 8 and icmp[0] == rep and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    return "answered"
            return "timeout"
        except OSError as exc:
            if exc.errno in LOCALLY_BLOCKED:
                return "timeout"
            raise
        finally:
            s.close()
