"""show's rule file: written back from the normalised rules, it loads to the same rules."""

from __future__ import annotations

import glob
import os

from bpfwall import config, diff, render
from bpfwall.cidrset import format_element

RICH = """\
version: 1
interfaces: [eth1]
policy: {ingress: drop, egress: accept}
conntrack:
  max_entries: 65536
  timeouts: {udp: 60}
  syn_cookies: {ports: [80, 443], rate: 1000/second}
  port_scan: {ports: 20, window: 10s, ban_for: 10m}
  reject_budget: {rate: 100/second, burst: 10, per_source: 2/second, source_burst: 4}
never_ban: [192.0.2.1/32, "@bad"]
sets:
  bad: {type: cidr, elements: [203.0.113.0/24, "2001:db8:bad::/48", 198.51.100.7]}
  web: {type: port, elements: [80, 443, "8000-8100"]}
rules:
  - {name: replies, ct: [established, related], action: accept}
  - {name: bad, src: ["@bad", 192.0.2.0/24], action: drop, log: 5/minute}
  - {name: ssh-flood, proto: tcp, dport: ssh, tcp_flags: "syn,!ack",
     limit: {rate: 5/minute, burst: 5, per: source, over: true}, action: ban, ban_for: 1h}
  - {name: web, proto: tcp, dport: "@web", interfaces: eth1, family: ipv4, action: accept}
  - {name: dns, proto: [udp, tcp], sport: 1024-65535, dport: domain, action: accept, log: true}
  - {name: ping, proto: [icmp, icmpv6], icmp_type: echo-request, action: accept,
     limit: {rate: 10/second, bytes: true, burst: 20000}}
  - {name: unreach, proto: icmp, icmp_type: destination-unreachable, icmp_code: [3, 4], action: accept}
  - {name: no-smtp, direction: egress, proto: tcp, dport: 25, action: reject}
  - {name: backup-out, direction: egress, dst: 10.9.0.0/16, cgroup: /system.slice/backup.service/,
     user: root, action: accept}
"""


def round_trip(rs):
    elements = {n: [format_element(e) for e in sorted(s)] for n, s in rs.cidr_sets.items()}
    again = config.loads(render.rule_file(rs, elements), "shown.yaml")
    return elements, again


def test_show_round_trips_every_key(tmp_path):
    rs = config.loads(RICH, "rich.yaml")
    elements, again = round_trip(rs)
    assert [render.rule_dict(r) for r in rs.rules] == [render.rule_dict(r) for r in again.rules]
    keys = ("name", "sport", "dport", "icmp", "limit", "log", "ban_for", "tcp_flags", "ct", "cgroup", "user")
    assert [[getattr(r, k) for k in keys] for r in rs.rules] == [[getattr(r, k) for k in keys] for r in again.rules]
    assert rs.conntrack == again.conntrack and rs.policy == again.policy and rs.interfaces == again.interfaces
    change = diff.compare(rs, again, elements, {n: [format_element(e) for e in sorted(s)]
                                                for n, s in again.cidr_sets.items()})
    assert not diff.differs(change), change


def test_the_shipped_examples_round_trip():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    for path in [os.path.join(root, "contrib", "bpfwall.yaml"), *glob.glob(os.path.join(root, "src", "bpfwall",
                                                                                         "examples", "*.yaml"))]:
        rs = config.load(path)
        _, again = round_trip(rs)
        assert not diff.differs(diff.compare(rs, again)), path
