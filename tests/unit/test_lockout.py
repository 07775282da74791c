"""The lockout guard's parts that need no root: finding sessions, judging them."""

from __future__ import annotations

from bpfwall import config, lockout


def rules(text: str):
    return config.loads("version: 1\n" + text, "t.yaml")


def test_ssh_connection_is_read_and_checked():
    env = {"SSH_CONNECTION": "192.0.2.7 51234 10.0.0.5 22"}
    assert lockout.from_environment(env) == [lockout.Session("192.0.2.7", 51234, "10.0.0.5", 22, "SSH_CONNECTION")]
    mapped = lockout.from_environment({"SSH_CONNECTION": "::ffff:192.0.2.7 1 ::ffff:10.0.0.5 22"})
    assert mapped[0].client == "192.0.2.7" and mapped[0].server == "10.0.0.5"
    for bad in ("", "1.2.3.4 22", "x 1 y 2", "192.0.2.7 1 2001:db8::1 22", "1.2.3.4 a 5.6.7.8 22"):
        assert lockout.from_environment({"SSH_CONNECTION": bad}) == []


def test_a_drop_policy_without_an_ssh_rule_is_a_threat():
    session = lockout.Session("192.0.2.7", 51234, "10.0.0.5", 22, "SSH_CONNECTION")
    closed = rules("policy: {ingress: drop}\nrules:\n  - {name: web, proto: tcp, dport: 80, action: accept}\n")
    found = lockout.threats(closed, [session], None, None)
    assert len(found) == 1 and found[0].direction == "ingress"
    assert "would be dropped by the ingress policy" in str(found[0])
    by_port = rules("policy: {ingress: drop}\nrules:\n  - {name: ssh, proto: tcp, dport: 22, action: accept}\n")
    assert lockout.threats(by_port, [session], None, None) == []


def test_established_counts_only_for_a_tracked_session():
    session = lockout.Session("192.0.2.7", 51234, "10.0.0.5", 22, "SSH_CONNECTION")
    ct_only = rules("policy: {ingress: drop}\nrules:\n  - {name: replies, ct: [established], action: accept}\n")
    assert lockout.threats(ct_only, [session], None, None) == []  # taken as tracked (check)
    from bpfwall.reference import Conntrack

    untracked = lockout.threats(ct_only, [session], None, Conntrack(), now=1)  # apply, empty table
    assert len(untracked) == 1


def test_an_egress_rule_that_drops_the_answers_is_a_threat():
    session = lockout.Session("fd42:200::7", 40000, "fd42:200::1", 22, "sshd connection")
    egress = rules("rules:\n  - {name: quiet, direction: egress, proto: tcp, sport: 22, action: drop}\n")
    found = lockout.threats(egress, [session], None, None)
    assert [t.direction for t in found] == ["egress"]
    assert "rule 'quiet'" in str(found[0]) and "[fd42:200::7]:40000" in str(found[0])


def test_sessions_on_other_interfaces_are_not_judged():
    session = lockout.Session("192.0.2.7", 51234, "10.0.0.5", 22, "SSH_CONNECTION")
    closed = rules("policy: {ingress: drop}\nrules:\n  - {name: web, proto: tcp, dport: 80, action: accept}\n")
    assert lockout.threats(closed, [session], ["bpfwall-no-such-if"], None) == []


def test_sockets_from_proc_are_those_sock_diag_gives():
    """The guard reads /proc/net/tcp{,6}; the kernel's sock_diag (through pyroute2) must agree,
    for both families, IPv4-mapped peers, listeners and both ends of each connection."""
    import socket

    from pyroute2 import DiagSocket

    held = []
    for family, host, peer in ((socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "::1"),
                               (socket.AF_INET6, "::", "127.0.0.1")):
        listener = socket.socket(family)
        listener.bind((host, 0))
        listener.listen()
        client = socket.create_connection((peer, listener.getsockname()[1]))
        held += [listener, client, listener.accept()[0]]
    try:
        from_proc = sorted(tuple(s.values()) for s in lockout._tcp_sockets())
        from_diag = []
        with DiagSocket() as ds:
            ds.bind()
            for family in (socket.AF_INET, socket.AF_INET6):
                for s in ds.get_sock_stats(family=family, states=(1 << 1) | (1 << 10)):
                    from_diag.append((s["idiag_state"], s["idiag_src"], s["idiag_sport"], s["idiag_dst"],
                                      s["idiag_dport"], s["idiag_inode"]))
        assert from_proc == sorted(from_diag)
        listening = {row[2] for row in from_proc if row[0] == 10}
        assert {s.getsockname()[1] for s in held[::3]} <= listening
    finally:
        for s in held:
            s.close()
