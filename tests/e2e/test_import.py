"""Import against the real thing: a rule set is loaded into iptables (or nftables) in the
lab's server namespace, probed from the client with a few hundred real connections, dumped
with iptables-save (nft -j list ruleset), imported, applied with bpfwall in the same
namespace (netfilter emptied), and probed again: every probe must end the same way.

A probe is a TCP connect or a UDP query from one of eight client addresses to a port of
the server: 'open'/'answered', 'refused' (a RST or an ICMP unreachable: a reject, or
nothing listening) or 'timeout' (dropped).
"""

from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from .conftest import apply, bpfwall, write

SOURCES_V4 = [f"10.200.0.{i}" for i in range(2, 10)]
SOURCES_V6 = [f"fd42:200::{i:x}" for i in range(2, 6)]
PROBES = [("tcp", p) for p in (22, 25, 143, 8080)] + [("udp", p) for p in (53, 123, 514, 9999)]
N_PROBES = 300

IPTABLES = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:services - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -m set --match-set blocked src -j DROP
-A INPUT -s 10.200.0.0/29 -p tcp -m tcp --dport 22 --syn -j ACCEPT
-A INPUT -p tcp -m multiport --dports 25,143 -j services
-A INPUT -p udp -m udp --dport 53 -j ACCEPT
-A INPUT -p udp -m multiport --dports 123,514 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -p tcp -m tcp --tcp-flags SYN,ACK SYN --dport 8080 -m comment --comment web -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A services -s 10.200.0.4/30 -j DROP
-A services -p tcp -m tcp --dport 25 -j ACCEPT
-A services -p tcp -j REJECT --reject-with tcp-reset
COMMIT
"""

NFT = """\
table inet filter {
  set blocked { type ipv4_addr; flags interval; elements = { 10.200.0.9, 10.200.0.6-10.200.0.7 } }
  set open6 { type inet_service; elements = { 25, 53 } }
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname "lo" accept
    ip saddr @blocked drop
    ip saddr 10.200.0.0/29 tcp dport 22 tcp flags & (fin|syn|rst|ack) == syn accept
    meta l4proto tcp jump services
    udp dport 53 accept
    udp dport { 123, 514 } reject
    ip6 saddr fd42:200::/126 tcp dport @open6 accept
    ip6 saddr fd42:200::/126 udp dport @open6 accept
    icmp type echo-request accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
  }
  chain services {
    ip saddr 10.200.0.4/30 drop
    tcp dport 25 accept
    tcp dport 143 reject with tcp reset
    return
  }
  chain output {
    type filter hook output priority 0; policy accept;
    tcp dport 9 drop
  }
}
"""


def in_ns(lab, *cmd: str, stdin: str | None = None) -> str:
    """A netfilter tool in the server's network namespace only (nsenter --net): unlike
    ip netns exec, it leaves /sys, and with it bpffs, alone."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{lab.server_ns}", *cmd], input=stdin,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, (cmd, res.stderr)
    return res.stdout


def probe(lab, proto: str, src: str, port: int) -> str:
    query = lab.tcp_connect if proto == "tcp" else lab.udp_query
    return query(port, v6=":" in src, timeout=0.5, src=src)


def plan(seed: int, sources: list[str]) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    every = [(proto, src, port) for src in sources for proto, port in PROBES]
    return every + [rng.choice(every) for _ in range(N_PROBES - len(every))]


def run_probes(lab, probes: list[tuple[str, str, int]]) -> list[str]:
    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(lambda p: probe(lab, p[0], p[1], p[2]), probes))


@pytest.fixture
def sources(lab):
    """More client addresses, so rules on sources have something to tell apart."""
    for addr in SOURCES_V4[1:]:
        subprocess.run(["ip", "-n", lab.client_ns, "addr", "add", f"{addr}/24", "dev", lab.client_if], check=True)
    for addr in SOURCES_V6[1:]:
        subprocess.run(["ip", "-n", lab.client_ns, "addr", "add", f"{addr}/64", "dev", lab.client_if, "nodad"],
                       check=True)
    # The kernel rate-limits the ICMP errors netfilter's REJECT sends, as bpfwall's reject
    # budget does its answers: without this, 32 probes at once see most of those rejects as
    # drops. Both are lifted (bpfwall's by without_reject_budget()).
    for knob in ("net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000",
                 "net.ipv4.icmp_msgs_burst=1000000", "net.ipv6.icmp.ratelimit=0"):
        in_ns(lab, "sysctl", "-qw", knob)
    return lab


def without_reject_budget(text: str) -> str:
    """The imported rule file with a reject budget no probe run reaches, as the kernel's
    ICMP limits are lifted for netfilter."""
    data = yaml.safe_load(text)
    data.setdefault("conntrack", {})["reject_budget"] = {
        "rate": "1000000/second", "burst": 100000, "per_source": "1000000/second", "source_burst": 100000}
    return yaml.safe_dump(data, sort_keys=False)


def compare(before: list[str], after: list[str], probes) -> None:
    diff = [(p, b, a) for p, b, a in zip(probes, before, after, strict=True) if b != a]
    assert not diff, f"{len(diff)} of {len(probes)} probes differ, e.g. {diff[:5]}"
    assert {"open", "answered", "refused", "timeout"} <= set(before), set(before)


def test_iptables_import_gives_the_same_verdicts(sources, tmp_path):
    lab = sources
    in_ns(lab, "ipset", "create", "blocked", "hash:net")
    in_ns(lab, "ipset", "add", "blocked", "10.200.0.9")
    in_ns(lab, "iptables-restore", stdin=IPTABLES)
    probes = plan(1, SOURCES_V4)
    try:
        before = run_probes(lab, probes)
        (tmp_path / "dump").write_text(in_ns(lab, "iptables-save"))
        (tmp_path / "ipset").write_text(in_ns(lab, "ipset", "save"))
    finally:
        in_ns(lab, "iptables", "-F")
        in_ns(lab, "iptables", "-X")
        in_ns(lab, "iptables", "-P", "INPUT", "ACCEPT")
        in_ns(lab, "ipset", "destroy")
    res = bpfwall("import", "iptables", str(tmp_path / "dump"), "--ipset", str(tmp_path / "ipset"))
    assert res.returncode == 0, res.stderr
    assert "could not be carried" in res.stderr
    rules = write(tmp_path, without_reject_budget(res.stdout), "imported.yaml")
    apply(lab, rules)
    after = run_probes(lab, probes)
    compare(before, after, probes)


def test_nft_import_gives_the_same_verdicts(sources, tmp_path):
    lab = sources
    in_ns(lab, "nft", "-f", "-", stdin=NFT)
    probes = plan(2, SOURCES_V4 + SOURCES_V6)
    try:
        before = run_probes(lab, probes)
        (tmp_path / "ruleset.json").write_text(in_ns(lab, "nft", "-j", "list", "ruleset"))
    finally:
        in_ns(lab, "nft", "flush", "ruleset")
    res = bpfwall("import", "nft", str(tmp_path / "ruleset.json"))
    assert res.returncode == 0, res.stderr
    rules = write(tmp_path, without_reject_budget(res.stdout), "imported.yaml")
    apply(lab, rules)
    after = run_probes(lab, probes)
    compare(before, after, probes)
