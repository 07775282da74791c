"""Egress rules by owner, end to end: processes in cgroups this test makes, under two
users, connecting out of the protected namespace through the CLI's apply.

The verdict each gets is the one a socket sees: an accepted connect opens, a rejected one is
refused at once (the egress program hands the RST or ICMP error to the local stack).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

import pytest

from bpfwall import exporter, libbpf, owners
from bpfwall.lab import CLIENT_V4, CLIENT_V6, SERVER_V4
from bpfwall.scope import Scope
from tests.e2e.conftest import apply, bpfwall, stats, write

TCP_PORT, UDP_PORT = 8081, 5353
STORAGE = '[10.200.0.0/24, "fd42:200::/64"]'  # the client side, as a storage network
NOBODY = 65534

# A process that joins a cgroup, enters the namespace, becomes uid, then tries a TCP connect
# and a UDP exchange to the client side; prints what each gave.
_PROBE = """
import ctypes, json, os, socket, sys
cgroup_procs, ns, uid, family, addr, tcp_port, udp_port, udp_how = sys.argv[1:]
with open(cgroup_procs, "w") as f:
    f.write(str(os.getpid()))
# For good: the process never comes back, and a socket is owned by whoever creates it.
if ctypes.CDLL(None).setns(os.open("/run/netns/" + ns, os.O_RDONLY), 0x40000000) != 0:
    sys.exit("setns failed")
os.setuid(int(uid))
fam = socket.AF_INET6 if family == "6" else socket.AF_INET
tcp = socket.socket(fam, socket.SOCK_STREAM)
udp = socket.socket(fam, socket.SOCK_DGRAM)
out = {}
for name, s, port in (("tcp", tcp, int(tcp_port)), ("udp", udp, int(udp_port))):
    s.settimeout(2)
    try:
        if name == "udp" and udp_how == "sendto":
            s.sendto(b"ping", (addr, port))
        else:
            s.connect((addr, port))
            if name == "udp":
                s.send(b"ping")
        if name == "udp":
            s.recv(100)
        out[name] = "open"
    except ConnectionRefusedError:
        out[name] = "refused"
    except TimeoutError:
        out[name] = "timeout"
    except OSError as exc:
        out[name] = os.strerror(exc.errno)
print(json.dumps(out))
"""


@pytest.fixture
def cgroups():
    mount = owners.cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount on this host")
    base = f"bpfwall-e2e-{os.getpid()}"
    made = []
    try:
        for path in (base, f"{base}/backup", f"{base}/backup/job", f"{base}/web"):
            os.mkdir(os.path.join(mount, path))
            made.append(path)
        yield mount, base
    finally:
        for path in reversed(made):
            os.rmdir(os.path.join(mount, path))


def serve_on_client(lab, families=(False, True)) -> None:
    """The TCP and UDP servers the probes reach, on the client side."""
    for v6 in families:
        lab.tcp_server(TCP_PORT, v6=v6, on="client")
        lab.udp_server(UDP_PORT, v6=v6, on="client")


def probe(lab, mount: str, cgroup: str, uid: int, v6: bool, udp_how: str = "connect") -> dict:
    """How a TCP connect and a UDP exchange (after connect(), or by sendto()) end."""
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, os.path.join(mount, cgroup, "cgroup.procs"), lab.server_ns,
         str(uid), "6" if v6 else "4", CLIENT_V6 if v6 else CLIENT_V4, str(TCP_PORT), str(UDP_PORT), udp_how],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_only_the_named_cgroup_and_user_reach_the_storage_network(lab, cgroups, tmp_path):
    mount, base = cgroups
    serve_on_client(lab)
    rules = write(tmp_path, f"""
version: 1
rules:
  - {{name: backup-only, direction: egress, dst: {STORAGE}, cgroup: {base}/backup, action: accept}}
  - {{name: nobody-tcp, direction: egress, proto: tcp, dport: {TCP_PORT}, user: nobody, action: accept}}
  - {{name: no-storage, direction: egress, proto: [tcp, udp], dst: {STORAGE}, action: reject}}
""")
    apply(lab, rules)
    for v6 in (False, True):
        # backup/job is below backup: the rule naming backup covers it, for any user.
        assert probe(lab, mount, f"{base}/backup/job", 0, v6) == {"tcp": "open", "udp": "open"}
        assert probe(lab, mount, f"{base}/backup", NOBODY, v6) == {"tcp": "open", "udp": "open"}
        # web: only nobody's TCP passes, by the user rule.
        assert probe(lab, mount, f"{base}/web", NOBODY, v6) == {"tcp": "open", "udp": "refused"}
        assert probe(lab, mount, f"{base}/web", 0, v6) == {"tcp": "refused", "udp": "refused"}
    counts = {r["name"]: r["packets"] for r in stats(lab)["rules"]}
    assert counts["backup-only"] > 0 and counts["nobody-tcp"] > 0 and counts["no-storage"] > 0
    shown = bpfwall("show", "--netns", lab.server_ns)
    assert shown.returncode == 0, shown.stderr
    assert f"cgroup: {base}/backup" in shown.stdout and "user: nobody" in shown.stdout

    # explain runs the packet through the egress program as sent from each owner, the
    # reference model beside it; --file asks the model alone.
    for owner, rule, verdict in (
        (["--cgroup", f"{base}/backup/job"], "backup-only", "pass"),
        (["--cgroup", f"{base}/web", "--user", "nobody"], "nobody-tcp", "pass"),
        (["--user", "nobody"], "nobody-tcp", "pass"),  # from the root cgroup
        (["--cgroup", f"{base}/web", "--user", "0"], "no-storage", "reject"),
        ([], "no-storage", "reject"),  # without a socket: only rules without owner keys
    ):
        for where in (["--netns", lab.server_ns], ["--file", rules]):
            res = bpfwall("explain", *where, "-i", lab.server_if, "--direction", "egress", *owner,
                          "--proto", "tcp", "--src", SERVER_V4, "--dst", CLIENT_V4, "--dport", str(TCP_PORT),
                          "--json")
            assert res.returncode == 0, res.stderr
            got = json.loads(res.stdout)
            assert (got["rule"], got["verdict"]) == (rule, verdict), (owner, where, got)
            assert got.get("agree", True), got
            # the call that would send it: the rejecting rule refuses it at connect() already
            call = got.get("at_connect")
            if owner:
                assert (call["outcome"], call["rule"]) == ({"pass": "go", "reject": "reject"}[verdict], rule), got
            else:
                assert call is None, got  # no socket: no call
    assert not [p for p in os.listdir(os.path.join(mount, base, "web")) if p.startswith("bpfwall-explain")]

    # The exporter names the owner rules, and says whether each one's cgroup exists.
    metrics = {m.name: m for m in exporter._ScopeMetrics(Scope(lab.server_ns)).collect()}
    owned = {s.labels["rule"]: s.labels for s in metrics["bpfwall_rule_owner_info"].samples}
    assert owned == {"backup-only": {"rule": "backup-only", "cgroup": f"{base}/backup", "user": "",
                                     "cgroup_present": "yes"},
                     "nobody-tcp": {"rule": "nobody-tcp", "cgroup": "", "user": "nobody", "cgroup_present": ""}}


def test_a_refused_connect_or_sendto_fails_at_the_call_and_sends_nothing(lab, cgroups, tmp_path):
    """A drop answers connect() and sendto() with EPERM, a reject with ECONNREFUSED, before
    any packet: the egress program never sees one. Two cgroups, two users, both families."""
    mount, base = cgroups
    serve_on_client(lab)
    rules = write(tmp_path, f"""
version: 1
rules:
  - {{name: backup-only, direction: egress, dst: {STORAGE}, cgroup: {base}/backup, action: accept}}
  - {{name: nobody-udp, direction: egress, proto: udp, dport: {UDP_PORT}, user: nobody, action: accept}}
  - {{name: no-storage-tcp, direction: egress, proto: tcp, dst: {STORAGE}, action: drop}}
  - {{name: no-storage-udp, direction: egress, proto: udp, dst: {STORAGE}, action: reject}}
""")
    apply(lab, rules)
    eperm = os.strerror(1)
    for v6 in (False, True):
        for how in ("sendto", "connect"):
            assert probe(lab, mount, f"{base}/backup/job", 0, v6, how) == {"tcp": "open", "udp": "open"}
            assert probe(lab, mount, f"{base}/backup", NOBODY, v6, how) == {"tcp": "open", "udp": "open"}
            assert probe(lab, mount, f"{base}/web", NOBODY, v6, how) == {"tcp": eperm, "udp": "open"}
            assert probe(lab, mount, f"{base}/web", 0, v6, how) == {"tcp": eperm, "udp": "refused"}
    counts = {r["name"]: r["packets"] for r in stats(lab)["rules"]}
    # 4 refused TCP connects and 2 UDP calls (sendto, connect), per family: each counted once,
    # at the call, as no packet ever left.
    assert (counts["no-storage-tcp"], counts["no-storage-udp"]) == (8, 4), counts
    status = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert status["at_connect"] is True, status

    # With an interface of the namespace left unprotected, a connection could leave by it:
    # the calls go on, and the egress program judges their packets.
    spare = f"bpwv{os.getpid() % 100000}"
    subprocess.run(["ip", "-n", lab.server_ns, "link", "add", spare, "type", "veth", "peer", "name", f"{spare}p"],
                   check=True)
    try:
        res = bpfwall("apply", "-f", str(rules), "-i", lab.server_if, "--netns", lab.server_ns)
        assert res.returncode == 0, res.stderr
        assert f"{spare}, {spare}p in this namespace is not protected" in res.stdout + res.stderr
        assert probe(lab, mount, f"{base}/web", 0, False) == {"tcp": "timeout", "udp": "refused"}
        status = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
        assert status["at_connect"] is False, status
        assert not hooks_linked(), "the hooks' links outlive the rule set that judged at connect()"
    finally:
        subprocess.run(["ip", "-n", lab.server_ns, "link", "del", spare], check=False)


def test_a_dispatcher_without_hooks_is_made_anew_by_the_next_apply(lab, cgroups, tmp_path):
    """A scope whose dispatcher an older bpfwall made (no connect and sendmsg hooks) gets a new
    one at the next apply, its links moved to it, and judges connections from then on."""
    mount, base = cgroups
    serve_on_client(lab, (False,))
    plain = write(tmp_path, """
version: 1
rules:
  - {name: web, direction: egress, proto: tcp, dport: 80, action: accept}
""", name="plain.yaml")
    apply(lab, plain)
    scope = Scope(lab.server_ns)
    for name in os.listdir(scope.dispatch_dir):  # as an older bpfwall left it
        if name.startswith(("connect", "sendmsg")):
            os.unlink(os.path.join(scope.dispatch_dir, name))
    before = scope.require_state().dispatcher
    owned = write(tmp_path, f"""
version: 1
rules:
  - {{name: backup-only, direction: egress, dst: {STORAGE}, cgroup: {base}/backup, action: accept}}
  - {{name: no-storage, direction: egress, proto: [tcp, udp], dst: {STORAGE}, action: drop}}
""", name="owned.yaml")
    apply(lab, owned)
    after = scope.require_state().dispatcher
    assert before["ingress"] != after["ingress"] and before["egress"] != after["egress"]
    status = json.loads(bpfwall("status", "--netns", lab.server_ns, "--json").stdout)
    assert status["at_connect"] is True and all(i["attached"] for i in status["interfaces"]), status
    assert probe(lab, mount, f"{base}/backup", 0, False) == {"tcp": "open", "udp": "open"}
    assert probe(lab, mount, f"{base}/web", 0, False, "sendto") == {"tcp": os.strerror(1), "udp": os.strerror(1)}


def hooks_linked() -> int:
    """How many links of bpfwall's connect and sendmsg programs there are."""
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    progs = {p["id"]: p.get("name", "") for p in json.loads(subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout)}
    return sum(progs.get(link.get("prog_id"), "").startswith(("bpfwall_connect", "bpfwall_sendmsg"))
               for link in links)


def test_a_cgroup_made_after_the_apply_is_matched_without_another(lab, cgroups, tmp_path):
    mount, base = cgroups
    serve_on_client(lab, (False,))
    late = f"{base}/web/late"  # made below, after the apply, as systemd starts a service
    rules = write(tmp_path, f"""
version: 1
rules:
  - {{name: late-only, direction: egress, dst: {STORAGE}, cgroup: {late}, action: accept}}
  - {{name: no-storage, direction: egress, proto: [tcp, udp], dst: {STORAGE}, action: reject}}
""")
    checked = bpfwall("check", "-f", str(rules))
    assert checked.returncode == 0, checked.stderr
    assert f"cgroup {late} does not exist now" in checked.stdout + checked.stderr
    apply(lab, rules)
    path = os.path.join(mount, late)
    for _ in range(2):  # made, removed and made again: a new id each time
        os.mkdir(path)
        try:
            assert probe(lab, mount, late, 0, False) == {"tcp": "open", "udp": "open"}
            assert probe(lab, mount, f"{base}/web", 0, False) == {"tcp": "refused", "udp": "refused"}
            assert known_cgroups(lab) == 1
        finally:
            os.rmdir(path)
        assert known_cgroups(lab) == 0  # a removed cgroup's id is forgotten
    assert watchers_loaded() == 2
    assert hooks_linked() == 4
    downed = bpfwall("down", "--netns", lab.server_ns)
    assert downed.returncode == 0, downed.stderr
    assert hooks_linked() == 0
    # down takes the tracepoint programs with the rest (the kernel frees them a moment later)
    deadline = time.monotonic() + 10
    while watchers_loaded() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watchers_loaded() == 0


def watchers_loaded() -> int:
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    return sum(p.get("name", "").startswith("bpfwall_cgroup") for p in progs)


def known_cgroups(lab) -> int:
    """How many cgroup ids the egress generation in force has a class for."""
    scope = Scope(lab.server_ns)
    fd = libbpf.obj_get(os.path.join(scope.gen_dir(scope.require_state().generation), "egress", "cgroup_class"))
    try:
        n, key = 0, ctypes.c_uint64()
        while libbpf.map_next_key(fd, key if n else None, key):
            n += 1
        return n
    finally:
        os.close(fd)


# Connects again and again for a while from a cgroup, as root; prints how each attempt ended.
_LOOP = """
import ctypes, json, os, socket, sys, time
cgroup_procs, ns, addr, port, seconds = sys.argv[1:]
with open(cgroup_procs, "w") as f:
    f.write(str(os.getpid()))
if ctypes.CDLL(None).setns(os.open("/run/netns/" + ns, os.O_RDONLY), 0x40000000) != 0:
    sys.exit("setns failed")
ends = {}
stop = time.monotonic() + float(seconds)
while time.monotonic() < stop:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((addr, int(port)))
        end = "open"
    except ConnectionRefusedError:
        end = "refused"
    except OSError as exc:
        end = type(exc).__name__
    s.close()
    ends[end] = ends.get(end, 0) + 1
print(json.dumps(ends))
"""


def test_applies_under_live_connection_attempts_judge_each_by_one_rule_set(lab, cgroups, tmp_path):
    """Every attempt, while applies flip a cgroup rule between accept and reject, either opens
    or is refused at once: none sees half of a rule set (a SYN let out and its answer lost)."""
    mount, base = cgroups
    lab.tcp_server(TCP_PORT, on="client")
    files = [write(tmp_path, f"""
version: 1
rules:
  - {{name: backup, direction: egress, dst: {STORAGE}, cgroup: {base}/backup, action: {action}}}
  - {{name: no-storage, direction: egress, proto: tcp, dst: {STORAGE}, action: reject}}
""", name=f"{action}.yaml") for action in ("accept", "reject")]
    apply(lab, files[0])
    loop = subprocess.Popen(
        [sys.executable, "-c", _LOOP, os.path.join(mount, base, "backup", "cgroup.procs"), lab.server_ns,
         CLIENT_V4, str(TCP_PORT), "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        flips = 0
        while loop.poll() is None and flips < 12:
            apply(lab, files[(flips + 1) % 2])
            flips += 1
        out, err = loop.communicate(timeout=30)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err
    ends = json.loads(out)
    assert set(ends) <= {"open", "refused"}, ends
    assert ends.get("open") and ends.get("refused"), ends  # the applies happened under the attempts
