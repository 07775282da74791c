"""A lab of two network namespaces joined by a veth pair, and real sockets inside them.

Used by `bpfwall demo`, the end-to-end tests and the benchmarks. Names carry
the process id so that two runs never collide, and closing the lab removes
the namespaces, the veth pair and every bpfwall pin of the server namespace,
whatever happened before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import subprocess
import threading
import time

from . import libbpf, netns, packets
from .dataplane import Scope

SERVER_V4, CLIENT_V4 = "10.200.0.1", "10.200.0.2"
SERVER_V6, CLIENT_V6 = "fd42:200::1", "fd42:200::2"


def lab_object_path() -> str:
    return os.path.join(os.path.dirname(__file__), "bpf", "lab.bpf.o")


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Lab:
    """server namespace <-> client namespace over veth; bpfwall goes on the server side."""

    def __init__(self, tag: str = "lab") -> None:
        pid = os.getpid()
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
        run("ip", "link", "add", self.server_if, "netns", self.server_ns, "type", "veth",
            "peer", "name", self.client_if, "netns", self.client_ns)
        for ns, dev, v4, v6 in ((self.server_ns, self.server_if, SERVER_V4, SERVER_V6),
                                (self.client_ns, self.client_if, CLIENT_V4, CLIENT_V6)):
            run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
        # A veth only takes frames sent to it with XDP_TX (bpfwall's rejects)
        # in time when it runs an XDP program itself.
        self._peer_obj = libbpf.BpfObject(lab_object_path())
        self._peer_obj.load()
        with netns.enter(self.client_ns):
            self._peer_link = libbpf.link_create(
                self._peer_obj.prog_fd("xdp_pass_peer"), netns.ifindex(self.client_if),
                libbpf.BPF_XDP, libbpf.XDP_FLAGS_DRV_MODE)

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
            Scope(self.server_ns).down()
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _socket(ns: str, kind: int, v6: bool, proto: int = 0) -> socket.socket:
        """A socket of namespace ns: it stays there whichever namespace uses it later."""
        with netns.enter(ns):
            return socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind, proto)

    @staticmethod
    def server_addr(v6: bool) -> str:
        return SERVER_V6 if v6 else SERVER_V4

    # --- servers on the server side ------------------------------------------------------------

    def tcp_server(self, port: int, v6: bool = False) -> None:
        """Accepts connections on port and closes them after a greeting."""
        s = self._socket(self.server_ns, socket.SOCK_STREAM, v6)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.server_addr(v6), port))
        s.listen(64)
        s.settimeout(0.2)
        self._servers.append(s)
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    def _accept_loop(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                conn.sendall(b"hello\n")
                conn.close()

    def udp_server(self, port: int, v6: bool = False) -> None:
        """Echoes every datagram on port."""
        s = self._socket(self.server_ns, socket.SOCK_DGRAM, v6)
        s.bind((self.server_addr(v6), port))
        s.settimeout(0.2)
        self._servers.append(s)
        threading.Thread(target=self._echo_loop, args=(s,), daemon=True).start()

    def _echo_loop(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, peer = s.recvfrom(2048)
                s.sendto(data, peer)
            except (TimeoutError, OSError):
                continue

    # --- clients on the client side ------------------------------------------------------------

    def tcp_connect(self, port: int, v6: bool = False, timeout: float = 1.0) -> str:
        """'open', 'refused' (an RST came back) or 'timeout' (nothing came back)."""
        s = self._socket(self.client_ns, socket.SOCK_STREAM, v6)
        s.settimeout(timeout)
        try:
            s.connect((self.server_addr(v6), port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        finally:
            s.close()

    def udp_query(self, port: int, v6: bool = False, timeout: float = 1.0) -> str:
        """'answered', 'refused' (ICMP port unreachable came back) or 'timeout'."""
        s = self._socket(self.client_ns, socket.SOCK_DGRAM, v6)
        s.settimeout(timeout)
        try:
            s.connect((self.server_addr(v6), port))
            s.send(b"ping")
            s.recv(2048)
            return "answered"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        finally:
            s.close()

    def ping(self, v6: bool = False, timeout: float = 1.0) -> str:
        """One ICMP echo from client to server: 'answered' or 'timeout'."""
        proto, req, rep = (socket.IPPROTO_ICMPV6, 128, 129) if v6 else (socket.IPPROTO_ICMP, 8, 0)
        s = self._socket(self.client_ns, socket.SOCK_RAW, v6, proto)
        ident = os.getpid() & 0xFFFF
        seq = int(time.monotonic() * 1000) & 0xFFFF
        msg = struct.pack("!BBHHH", req, 0, 0, ident, seq) + b"bpfwall"
        if not v6:  # the kernel fills the ICMPv6 checksum itself
            msg = msg[:2] + struct.pack("!H", packets.checksum(msg)) + msg[4:]
        deadline = time.monotonic() + timeout
        try:
            s.sendto(msg, (self.server_addr(v6), 0))
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
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "timeout"
            raise
        finally:
            s.close()
