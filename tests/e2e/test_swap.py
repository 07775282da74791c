"""Atomic swaps: two rule sets with opposite verdicts traded hundreds of times under traffic,
by the dispatcher's flip, as apply does it.

Each generation has its own counters, so every packet is counted by the one
rule set that judged it. If a packet ever met a mix of the two (one's tables,
the other's actions or policy), it would fall to a policy and be missing from
both rule counters, or be delivered without being counted as accepted.
"""

from __future__ import annotations

import socket
import threading
import time

from bpfwall import netns, setmaps, transaction
from bpfwall.compiler import compile_ruleset
from bpfwall.config import loads
from bpfwall.dispatcher import Dispatcher
from bpfwall.generation import Generation
from bpfwall.lab import CLIENT_V4, SERVER_V4
from bpfwall.scope import Scope

PORT = 7007
ACCEPT = f"""\
version: 1
policy: {{ingress: drop}}
sets:
  clients: {{type: cidr, elements: [{CLIENT_V4}/32]}}
rules:
  - {{name: judged, proto: udp, dport: {PORT}, src: "@clients", action: accept}}
"""
DROP = ACCEPT.replace("policy: {ingress: drop}", "policy: {ingress: accept}").replace(
    "action: accept", "action: drop")


def test_swaps_under_traffic_judge_every_packet_whole(lab):
    a, b = loads(ACCEPT, "a.yaml"), loads(DROP, "b.yaml")
    scope = Scope(lab.server_ns)
    transaction.apply(scope, a, [lab.server_if])
    with netns.enter(lab.server_ns):
        gen_a = scope.open_generation()
        gen_b = Generation.load(compile_ruleset(b), {})
        setmaps.fill(gen_b.set_fds(), b.cidr_sets, b.set_slots())
        disp = Dispatcher.open(scope.dispatch_dir)
        n_a = disp.active()
        n_b = n_a + 1  # the idle slot
        disp.stage("ingress", n_b, gen_b.prog_fd)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rx.bind((SERVER_V4, PORT))
    rx.settimeout(0.5)
    received = 0
    stop = threading.Event()

    def receive():
        nonlocal received
        while True:
            try:
                rx.recv(64)
                received += 1
            except TimeoutError:
                if stop.is_set():
                    return

    with netns.enter(lab.client_ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0

    def send():
        nonlocal sent
        while not stop.is_set():
            tx.sendto(b"seq", (SERVER_V4, PORT))
            sent += 1
            if sent % 50 == 0:
                time.sleep(0.001)  # paced: the receiver must never overflow

    threads = [threading.Thread(target=receive), threading.Thread(target=send)]
    for t in threads:
        t.start()
    try:
        for i in range(400):
            disp.flip(n_b if i % 2 == 0 else n_a)
            time.sleep(0.002)
        disp.flip(n_a)
    finally:
        stop.set()
        for t in threads:
            t.join()
        disp.clear(n_b)
        disp.close()
        tx.close()
        rx.close()
    try:
        ca, cb = gen_a.counters(), gen_b.counters()
    finally:
        gen_a.close()
        gen_b.close()
    accepted, dropped = ca[0][0], cb[0][0]
    assert sent > 2000
    assert accepted > 0 and dropped > 0, "both rule sets judged traffic"
    assert accepted + dropped == sent, "every packet was judged by exactly one rule set's rule"
    assert received == accepted, "exactly the packets the accepting rule set took were delivered"
