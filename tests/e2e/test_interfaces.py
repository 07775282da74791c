"""The interfaces operators have: each protected natively, or in generic mode with the reason
in apply's output and in status, and traffic judged either way.

A bridge port (the lab's veth enslaved to a bridge that holds the addresses) runs native XDP;
the bridge device itself has none, so --mode auto puts it in generic mode and says why. A
veth whose peer is another namespace (a container's) is the lab itself, native everywhere.
This kernel has neither bonding nor 802.1Q VLAN devices (no modules), so those cases are
documented, not tested.
"""

from __future__ import annotations

import json
import subprocess

from bpfwall.lab import SERVER_V4, SERVER_V6
from tests.e2e.conftest import bpfwall, write

RULES = """
version: 1
policy: {ingress: drop, egress: accept}
rules:
  - {name: est, ct: [established, related], action: accept}
  - {name: ssh, proto: tcp, dport: 22, action: accept}
  - {name: nd, proto: icmpv6, action: accept}
  - {name: no-smtp, proto: tcp, dport: 25, action: reject}
"""


def bridged(lab) -> str:
    """Moves the server side's addresses onto a bridge whose port is the lab's veth."""
    br = f"br{lab.server_if}"[:15]
    ns = ["ip", "-n", lab.server_ns]
    for cmd in (["link", "add", br, "type", "bridge"], ["addr", "flush", "dev", lab.server_if],
                ["link", "set", lab.server_if, "master", br],
                ["addr", "add", f"{SERVER_V4}/24", "dev", br],
                ["addr", "add", f"{SERVER_V6}/64", "dev", br, "nodad"], ["link", "set", br, "up"]):
        subprocess.run([*ns, *cmd], check=True, capture_output=True)
    return br


def status(lab) -> dict:
    res = bpfwall("status", "--netns", lab.server_ns, "--json")
    assert res.returncode == 0, res.stderr
    return {i["name"]: i for i in json.loads(res.stdout)["interfaces"]}


def judged(lab) -> None:
    for v6 in (False, True):
        assert lab.tcp_connect(22, v6=v6) == "open", v6
        assert lab.tcp_connect(25, v6=v6) == "refused", v6
        assert lab.tcp_connect(143, v6=v6) == "timeout", v6


def test_a_bridge_port_runs_native_and_the_bridge_generic_with_the_reason(lab, tmp_path):
    br = bridged(lab)
    rules = write(tmp_path, RULES)
    res = bpfwall("apply", "-f", rules, "-i", lab.server_if, "--netns", lab.server_ns, "--mode", "native")
    assert res.returncode == 0, res.stderr
    assert status(lab)[lab.server_if]["mode"] == "native"
    judged(lab)

    res = bpfwall("down", "--netns", lab.server_ns)
    assert res.returncode == 0, res.stderr
    refused = bpfwall("apply", "-f", rules, "-i", br, "--netns", lab.server_ns, "--mode", "native")
    assert refused.returncode == 1
    assert "a bridge has no native XDP; its ports do" in refused.stderr, refused.stderr
    res = bpfwall("apply", "-f", rules, "-i", br, "--netns", lab.server_ns, "--mode", "auto")
    assert res.returncode == 0, res.stderr
    assert f"{br}: generic mode: a bridge has no native XDP" in res.stdout + res.stderr
    entry = status(lab)[br]
    assert entry["mode"] == "generic" and "its ports do" in entry["generic_why"], entry
    shown = bpfwall("status", "--netns", lab.server_ns)
    assert f"{br}: generic mode: a bridge has no native XDP" in shown.stdout
    judged(lab)
