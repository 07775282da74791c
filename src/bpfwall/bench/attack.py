"""A legitimate client against a flood: TCP connections per second on the protected host
with no flood, under a flood with no firewall, and under the same flood with bpfwall.

The flood comes from the lab's sender (an AF_PACKET transmit ring, which every kernel has)
in the client namespace: TCP SYNs to the service's port and UDP datagrams to a closed port
in turn, each from a random spoofed source in 10.200.16.0-10.200.255.255. The
legitimate client opens connections to a real server in the other namespace and counts
those that complete: the server's greeting arrived. The server's kernel answers SYNs
with its own cookies (net.ipv4.tcp_syncookies=2, which bpfwall's SYN cookies need).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from scapy.all import IP, TCP, UDP, Ether

from .. import config, netns, transaction
from ..lab import CLIENT_V4, SERVER_V4, Lab
from ..scope import Scope
from ..sender import Sender, Sent
from ..stats import collect
from .throughput import _mac

SERVICE_PORT = 8080
CLOSED_PORT = 9999

RULES = f"""\
version: 1
policy: {{ingress: drop, egress: accept}}
conntrack:
  # SYNs to the service beyond 500 a second are answered from XDP with cookies.
  syn_cookies: {{ports: [{SERVICE_PORT}], rate: 500/second}}
rules:
  - {{name: established, ct: [established, related], action: accept}}
  - {{name: service, proto: tcp, dport: {SERVICE_PORT}, action: accept}}
  - {{name: ping, proto: icmp, icmp_type: echo-request, limit: 10/second, action: accept}}
"""


@dataclass
class Phase:
    name: str
    seconds: float
    attempts: int
    completed: int
    flood_packets: int = 0

    @property
    def conn_rate(self) -> float:
        return self.completed / self.seconds

    @property
    def flood_rate(self) -> float:
        return self.flood_packets / self.seconds

    def as_dict(self) -> dict:
        return {"phase": self.name, "seconds": round(self.seconds, 2), "attempts": self.attempts,
                "completed": self.completed, "connections_per_s": round(self.conn_rate, 1),
                "flood_packets": self.flood_packets, "flood_pps": round(self.flood_rate)}


class Attack:
    """A lab with a greeting server on SERVICE_PORT, a flood generator and a client."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        eth = Ether(dst=_mac(lab.server_ns, lab.server_if), src=_mac(lab.client_ns, lab.client_if))
        # The sender rewrites the source address and port of each copy; it runs on CPU 0.
        frames = [
            bytes(eth / IP(src=CLIENT_V4, dst=SERVER_V4) / TCP(sport=1024, dport=SERVICE_PORT, flags="S",
                                                                seq=12345, window=64240)),
            bytes(eth / IP(src=CLIENT_V4, dst=SERVER_V4) / UDP(sport=1024, dport=CLOSED_PORT) / (b"x" * 18)),
        ]
        self.sender = Sender(lab.client_ns, lab.client_if, frames, spoof=True, cpu=0)
        subprocess.run(["ip", "netns", "exec", lab.server_ns, "sysctl", "-qw", "net.ipv4.tcp_syncookies=2"],
                       check=True)
        lab.tcp_server(SERVICE_PORT)

    def close(self) -> None:
        self.sender.close()

    @contextlib.contextmanager
    def flood(self) -> Iterator[list[Sent]]:
        """Floods until the block ends; yields a list that then holds what was sent."""
        with self.sender.running() as result:
            time.sleep(0.2)  # let the flood build up before anything is measured
            yield result

    def connect_once(self, timeout: float) -> bool:
        """One legitimate connection: True when the server's greeting arrives."""
        with netns.enter(self.lab.client_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((SERVER_V4, SERVICE_PORT))
            return s.recv(16).startswith(b"hello")
        except OSError:
            return False
        finally:
            s.close()

    def measure(self, name: str, seconds: float, flood: bool, timeout: float = 1.0) -> Phase:
        attempts = completed = 0
        # The client on the other CPU, so that its packets take the other queue.
        os.sched_setaffinity(0, {1})
        with self.flood() if flood else contextlib.nullcontext([Sent(0, 1.0)]) as sent:
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                attempts += 1
                completed += self.connect_once(timeout)
            took = time.monotonic() - t0
        packets = round(sent[0].pps * took)  # the flood's rate over the measured time
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        return Phase(name, took, attempts, completed, packets)


# A reject on both ports the flood hits: every answer to it goes to a spoofed source.
REFLECT_RULES = f"""\
version: 1
policy: {{ingress: accept}}
rules:
  - {{name: closed, proto: [tcp, udp], dport: [{SERVICE_PORT}, {CLOSED_PORT}], action: reject}}
conntrack:
"""
# The kernel's own ICMP limits, which are also bpfwall's defaults.
DEFAULT_BUDGET = "reject_budget: {rate: 1000/second, burst: 50, per_source: 1/second, source_burst: 6}"
# As good as none: what every reject answered from XDP cost before there was a budget.
NO_BUDGET = ("reject_budget: {rate: 100000000/second, burst: 1000000, per_source: 100000000/second, "
             "source_burst: 1000000}")


def reflection(seconds: float = 2.0, budget: str = DEFAULT_BUDGET) -> dict:
    """A spoofed flood at a reject rule: the answers that reached the spoofed sources
    (counted where they arrive, at the client end), the flood's length, and whether a
    lone legitimate connect to the rejected port still gets its RST afterwards."""
    with Lab("reflect", queues=2) as lab:
        attack = Attack(lab)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "reflect.yaml")
                with open(path, "w") as f:
                    f.write(f"{REFLECT_RULES}  {budget}\n")
                scope = Scope(lab.server_ns)
                transaction.apply(scope, config.load(path), [lab.server_if])
                before = lab.backscatter()
                t0 = time.monotonic()
                with attack.flood() as sent:
                    time.sleep(seconds)
                took = time.monotonic() - t0  # the whole flood, from its first batch to its last
                time.sleep(0.2)  # answers still in flight
                answers = lab.backscatter() - before
                data = collect(scope)
                lone = lab.tcp_connect(CLOSED_PORT)
        finally:
            attack.close()
    return {"seconds": round(took, 3), "flood_packets": sent[0].packets, "answers": answers,
            "answers_per_s": round(answers / took), "rejects_sent": data["rejects_sent"],
            "rejects_suppressed": data["rejects_suppressed"], "lone_connect": lone}


def run(seconds: float = 3.0) -> dict:
    """The three phases in one lab, in one run."""
    with Lab("attack", queues=2) as lab:
        attack = Attack(lab)
        try:
            phases = [attack.measure("no flood", seconds, flood=False),
                      attack.measure("flood, no firewall", seconds, flood=True)]
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "attack.yaml")
                with open(path, "w") as f:
                    f.write(RULES)
                scope = Scope(lab.server_ns)
                transaction.apply(scope, config.load(path), [lab.server_if])
                phases.append(attack.measure("no flood, bpfwall", seconds, flood=False))
                phases.append(attack.measure("flood, bpfwall", seconds, flood=True))
                data = collect(scope)
            return {"phases": [p.as_dict() for p in phases], "guard": data["guard"], "drops": data["drops"],
                    "rules": {r["name"]: r["packets"] for r in data["rules"]},
                    "policy_drops": data["policy"]["ingress"]["packets"]}
        finally:
            attack.close()
