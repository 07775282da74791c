"""The fleet through a real etcd: agents in two lab namespaces with different labels get
different merged policies (checked with real sockets), fleet set elements reach both live,
a bad policy is reported and not applied, and a killed agent's status lapses while its
firewall stays."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from bpfwall import scope as scope_mod
from bpfwall.fleet.store import Store
from bpfwall.lab import CLIENT_V4, Lab
from tests.e2e.conftest import bpfwall, fake_sshd, write
from tests.e2e.etcd import Etcd

BASE = """\
version: 1
policy: {ingress: drop}
sets:
  blocked: {type: cidr, fleet: true}
rules:
  - {name: no-blocked, src: "@blocked", action: drop}
  - {name: shared, proto: tcp, dport: 8080, action: accept}
"""

WEB = """\
version: 1
select: {role: web}
rules:
  - {name: web-only, proto: tcp, dport: 8081, action: accept}
"""


def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextlib.contextmanager
def agent(etcd: Etcd, prefix: str, host: str, lab: Lab, tmp_path, *labels: str,
          extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    log = open(tmp_path / f"agent-{host}.log", "a")
    cmd = [sys.executable, "-m", "bpfwall.cli", "agent", "--etcd", etcd.url, "--prefix", prefix, "--host", host,
           "-i", lab.server_if, "--netns", lab.server_ns, "--state-dir", str(tmp_path / f"state-{host}"), *extra]
    for label in labels:
        cmd += ["--label", label]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def statuses(etcd: Etcd, prefix: str, *login: str) -> dict[str, dict]:
    res = bpfwall("fleet", "status", "--etcd", etcd.url, "--prefix", prefix, "--json", *login)
    assert res.returncode in (0, 1), res.stderr
    return {h["host"]: h for h in json.loads(res.stdout)["hosts"]}


def fleet(etcd: Etcd, prefix: str, *args: str) -> subprocess.CompletedProcess:
    return bpfwall("fleet", *args, "--etcd", etcd.url, "--prefix", prefix)


@pytest.fixture
def labs():
    scope_mod.ensure_bpffs()
    with Lab("fweb") as web, Lab("fdb") as db:
        for lab in (web, db):
            for port in (8080, 8081):
                lab.tcp_server(port)
        yield web, db


def test_policies_sets_and_failures_across_two_hosts(labs, tmp_path):
    web_lab, db_lab = labs
    prefix = f"/bwtest-{os.getpid()}"
    with Etcd() as etcd:
        res = fleet(etcd, prefix, "push", write(tmp_path, BASE, "base.yaml"), "--name", "base")
        assert res.returncode == 0, res.stderr
        res = fleet(etcd, prefix, "push", write(tmp_path, WEB, "web.yaml"), "--name", "web")
        assert res.returncode == 0, res.stderr
        revision = Store(etcd.url, prefix).revision()
        with agent(etcd, prefix, "web1", web_lab, tmp_path, "role=web") as web_agent, \
                agent(etcd, prefix, "db1", db_lab, tmp_path, "role=db"):
            def converged(at: int) -> Callable[[], bool]:
                def check() -> bool:
                    s = statuses(etcd, prefix)
                    return all(h in s and s[h]["ok"] and s[h]["revision"] >= at for h in ("web1", "db1"))
                return check

            until("both hosts apply their policies", converged(revision))
            s = statuses(etcd, prefix)
            assert s["web1"]["policies"] == ["base", "web"] and s["db1"]["policies"] == ["base"]
            assert s["web1"]["labels"] == {"role": "web"} and s["web1"]["generation"] >= 1
            for lab, open_8081 in ((web_lab, "open"), (db_lab, "timeout")):
                assert lab.tcp_connect(8080) == "open"
                assert lab.tcp_connect(8081) == open_8081

            # A fleet set element reaches both hosts live (no new generation), and leaves them.
            generations = {h: s[h]["generation"] for h in s}
            res = fleet(etcd, prefix, "set", "add", "blocked", CLIENT_V4)
            assert res.returncode == 0, res.stderr
            until("the element blocks on both hosts",
                  lambda: web_lab.tcp_connect(8080, timeout=0.3) == "timeout"
                  and db_lab.tcp_connect(8080, timeout=0.3) == "timeout")
            assert {h: e["generation"] for h, e in statuses(etcd, prefix).items()} == generations
            res = fleet(etcd, prefix, "set", "del", "blocked", CLIENT_V4)
            assert res.returncode == 0, res.stderr
            until("the element is gone on both hosts",
                  lambda: web_lab.tcp_connect(8080) == "open" and db_lab.tcp_connect(8080) == "open")

            # One revision with a policy for neither host and a set element: no apply, and the
            # element is still made (and taken away again the same way).
            store = Store(etcd.url, prefix)
            nobody = WEB.replace("role: web", "role: none").replace("web-only", "nobody")
            store.put_many({"policies/nobody": nobody, f"sets/blocked/{CLIENT_V4}": ""})
            until("the element from the mixed revision blocks on both hosts",
                  lambda: web_lab.tcp_connect(8080, timeout=0.3) == "timeout"
                  and db_lab.tcp_connect(8080, timeout=0.3) == "timeout")
            store.put_many({}, deletes=["policies/nobody", f"sets/blocked/{CLIENT_V4}"])
            until("the element from the mixed revision is gone on both hosts",
                  lambda: web_lab.tcp_connect(8080) == "open" and db_lab.tcp_connect(8080) == "open")
            assert {h: e["generation"] for h, e in statuses(etcd, prefix).items()} == generations

            # More elements than etcd takes in one transaction, from stdin.
            many = "\n".join(f"10.200.{100 + i // 256}.{i % 256}" for i in range(300)) + "\n"
            res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "fleet", "set", "add", "blocked", "-",
                                  "--etcd", etcd.url, "--prefix", prefix], input=many, capture_output=True, text=True)
            assert res.returncode == 0 and "added 300 elements" in res.stdout, res.stderr

            def size(lab: Lab) -> int:
                res = bpfwall("set", "list", "blocked", "--netns", lab.server_ns, "--json")
                return json.loads(res.stdout)["size"] if res.returncode == 0 else -1

            until("300 elements on both hosts", lambda: size(web_lab) == 300 and size(db_lab) == 300)

            # A policy that does not parse is reported by every host and applied by none.
            bad_revision = store.put("policies/broken", "version: 1\nrules:\n  - {name: x, action: drop\n")
            until("both hosts report the bad policy", lambda: all(
                not h["ok"] and h["revision"] >= bad_revision and "policies/broken:" in h["error"]
                for h in statuses(etcd, prefix).values()))
            assert web_lab.tcp_connect(8081) == "open" and db_lab.tcp_connect(8081) == "timeout"
            assert fleet(etcd, prefix, "status").returncode == 1
            res = fleet(etcd, prefix, "rm", "broken")
            assert res.returncode == 0, res.stderr
            until("the hosts recover", converged(int(res.stdout.split("revision ")[1].rstrip(")\n"))))
            assert {h: e["generation"] for h, e in statuses(etcd, prefix).items()} == generations

            # A clash that only the web host sees: the same rule name in two of its policies.
            clash = WEB.replace("web-only", "shared").replace("8081", "8082")
            clash_revision = store.put("policies/web2", clash)
            until("the web host reports the clash", lambda: (lambda s: not s["web1"]["ok"]
                  and "duplicate rule name 'shared'" in s["web1"]["error"] and s["db1"]["ok"]
                  and s["db1"]["revision"] >= clash_revision)(statuses(etcd, prefix)))
            assert web_lab.tcp_connect(8081) == "open"
            _, fixed = store.delete("policies/web2")

            # An agent killed: its status lapses with its lease, its firewall stays.
            until("the web host recovers", converged(fixed))
            web_agent.kill()
            web_agent.wait()
            until("the dead host's status lapses", lambda: "web1" not in statuses(etcd, prefix), timeout=20)
            assert web_lab.tcp_connect(8081) == "open" and web_lab.tcp_connect(8082, timeout=0.3) == "timeout"


def test_push_refuses_a_bad_policy_and_writes_nothing(tmp_path):
    prefix = f"/bwtest-{os.getpid()}"
    with Etcd() as etcd:
        res = fleet(etcd, prefix, "push", write(tmp_path, WEB.replace("8081", "no-such-port")), "--name", "web")
        assert res.returncode == 2 and res.stderr.startswith("policies/web:4: "), res.stderr
        res = fleet(etcd, prefix, "push", write(tmp_path, "version: 1\nselect: web\n"), "--name", "web")
        assert res.returncode == 2 and "select: must be a mapping" in res.stderr
        assert Store(etcd.url, prefix).read("policies/")[1] == {}
        res = fleet(etcd, prefix, "rm", "web")
        assert res.returncode == 1 and "no policy 'web'" in res.stderr
        res = fleet(etcd, prefix, "set", "add", "blocked", "not-an-address")
        assert res.returncode == 2


def test_etcd_away_a_restart_on_the_cache_and_a_compacted_watch(tmp_path):
    scope_mod.ensure_bpffs()
    prefix = f"/bwtest-{os.getpid()}"
    open_all = WEB.replace("select: {role: web}\n", "")
    with Lab("fetcd") as lab, Etcd() as etcd:
        for port in (8080, 8081, 8082):
            lab.tcp_server(port)
        store = Store(etcd.url, prefix)
        revision = store.put("policies/base", BASE)
        with agent(etcd, prefix, "h1", lab, tmp_path) as first:
            until("the host applies", lambda: statuses(etcd, prefix).get("h1", {}).get("revision", 0) >= revision)
            assert lab.tcp_connect(8080) == "open" and lab.tcp_connect(8081, timeout=0.3) == "timeout"

            # etcd gone: the rules in force stay, and the agent keeps running.
            etcd.kill()
            time.sleep(1.5)
            assert first.poll() is None
            assert lab.tcp_connect(8080) == "open" and lab.tcp_connect(8081, timeout=0.3) == "timeout"
            first.kill()
            first.wait()

        # The firewall taken down, and an agent started while etcd is still away: it puts the
        # policy it cached back in force.
        assert bpfwall("down", "--netns", lab.server_ns).returncode == 0
        assert lab.tcp_connect(8081) == "open"
        with agent(etcd, prefix, "h1", lab, tmp_path) as second:
            until("the cached policy is in force", lambda: lab.tcp_connect(8081, timeout=0.3) == "timeout")
            assert lab.tcp_connect(8080) == "open"

            # etcd back: the agent converges on what changed meanwhile.
            etcd.start()
            revision = store.put("policies/open", open_all)
            until("the host converges after etcd returns", lambda: lab.tcp_connect(8081, timeout=0.3) == "open")
            until("the host reports the revision",
                  lambda: statuses(etcd, prefix).get("h1", {}).get("revision", 0) >= revision)

            # The agent frozen while etcd restarts, changes are made and the history compacted:
            # its watch cannot resume from its revision, so it reads everything again.
            second.send_signal(signal.SIGSTOP)
            try:
                etcd.kill()
                etcd.start()
                store.put("policies/more", open_all.replace("web-only", "more").replace("8081", "8082"))
                compacted = store.put("policies/base", BASE.replace("8080", "8083"))
                store._post("/kv/compaction", {"revision": compacted})
            finally:
                second.send_signal(signal.SIGCONT)
            until("the host converges past the compaction",
                  lambda: lab.tcp_connect(8082, timeout=0.3) == "open" and lab.tcp_connect(8080, timeout=0.3)
                  == "timeout", timeout=30)
            assert statuses(etcd, prefix)["h1"]["ok"]
        log = (tmp_path / "agent-h1.log").read_text()
        assert "applying the policy cached at revision" in log and "compacted" in log, log


def _certificates(d) -> dict[str, str]:
    """A CA, etcd's server certificate for 127.0.0.1 and a client certificate, by openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=bpfwall-test-ca")
    # etcd's JSON gateway connects to etcd's own gRPC with the server certificate, which client
    # certificate auth then checks as a client's: it needs clientAuth as well. A client's
    # certificate has no Common Name: with auth on, the gateway refuses one that has.
    for name, subject, ext in (
            ("server", "/CN=server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
            ("agent", "/O=bpfwall-agents", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", subject)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return {k: str(d / v) for k, v in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
                                       ("client_cert", "agent.pem"), ("client_key", "agent.key"))}


def test_tls_client_certificates_and_roles(tmp_path):
    """etcd as docs/fleet.md sets it up: TLS with client certificates, and auth with a
    read-only role for agents that may write only status/. Tokens live 2 s here, so the
    agent has to log in again while it runs."""
    scope_mod.ensure_bpffs()
    certs = _certificates(tmp_path)
    prefix = f"/bwtest-{os.getpid()}"
    tls = ["--cacert", certs["ca"], "--cert", certs["client_cert"], "--key", certs["client_key"]]
    admin = [*tls, "--user", "admin", "--password-file", write(tmp_path, "admin-pw\n", "admin.pw")]
    as_agent = [*tls, "--user", "agent", "--password-file", write(tmp_path, "agent-pw\n", "agent.pw")]
    with Lab("ftls") as lab, Etcd(tls=certs, args=("--auth-token-ttl", "2")) as etcd:
        etcd.enable_auth({"admin": ("admin-pw", [("READWRITE", f"{prefix}/")]),
                          "agent": ("agent-pw", [("READ", f"{prefix}/"), ("READWRITE", f"{prefix}/status/")])})
        lab.tcp_server(8080)
        lab.tcp_server(8081)
        res = bpfwall("fleet", "push", write(tmp_path, BASE), "--name", "base", "--etcd", etcd.url,
                      "--prefix", prefix, *admin)
        assert res.returncode == 0, res.stderr
        # No client certificate: etcd refuses the connection, and the command says so.
        res = bpfwall("fleet", "status", "--etcd", etcd.url, "--prefix", prefix, "--cacert", certs["ca"])
        assert res.returncode == 1 and "etcd" in res.stderr, res.stderr
        # A certificate but no user: etcd's auth asks for one, and the command says how.
        res = bpfwall("fleet", "status", "--etcd", etcd.url, "--prefix", prefix, *tls)
        assert res.returncode == 1 and "give --user and --password-file" in res.stderr, res.stderr
        # The agents' user may not write a policy.
        res = bpfwall("fleet", "push", write(tmp_path, WEB, "web.yaml"), "--name", "web", "--etcd", etcd.url,
                      "--prefix", prefix, *as_agent)
        assert res.returncode == 1 and "permission denied" in res.stderr and "'agent'" in res.stderr, res.stderr
        log = open(tmp_path / "agent.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "agent", "--etcd", etcd.url, "--prefix",
                                 prefix, "--host", "h1", "-i", lab.server_if, "--netns", lab.server_ns,
                                 "--state-dir", str(tmp_path / "state"), *as_agent],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            until("the agent applies over TLS", lambda: lab.tcp_connect(8081, timeout=0.3) == "timeout")
            assert lab.tcp_connect(8080) == "open"
            res = bpfwall("fleet", "status", "--etcd", etcd.url, "--prefix", prefix, "--json", *as_agent)
            assert res.returncode == 0 and json.loads(res.stdout)["hosts"][0]["host"] == "h1", res.stderr
            time.sleep(5)  # the agent's token lapses meanwhile: its next requests log in again
            res = bpfwall("fleet", "set", "add", "blocked", CLIENT_V4, "--etcd", etcd.url, "--prefix", prefix,
                          *admin)
            assert res.returncode == 0, res.stderr
            until("the element blocks", lambda: lab.tcp_connect(8080, timeout=0.3) == "timeout")
            assert statuses(etcd, prefix, *as_agent)["h1"]["ok"]
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def test_a_canary_push_that_holds_and_one_that_fails_and_is_taken_back(labs, tmp_path):
    web_lab, db_lab = labs
    for lab in labs:
        lab.tcp_server(8082)
    prefix = f"/bwtest-{os.getpid()}"
    with Etcd() as etcd:
        store = Store(etcd.url, prefix)
        store.put("policies/base", BASE)
        revision = store.put("policies/web", WEB)
        with agent(etcd, prefix, "web1", web_lab, tmp_path, "role=web", "canary=yes"), \
                agent(etcd, prefix, "db1", db_lab, tmp_path, "role=db"):
            until("both hosts apply", lambda: all(
                h.get("revision", 0) >= revision for h in statuses(etcd, prefix).values())
                and len(statuses(etcd, prefix)) == 2)

            # A new base that also opens 8082: the canary first, the rest after the wait.
            newer = write(tmp_path, BASE + "  - {name: more, proto: tcp, dport: 8082, action: accept}\n", "b2.yaml")
            push = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "fleet", "push", newer, "--name", "base",
                                     "--canary", "canary=yes", "--wait", "3", "--etcd", etcd.url, "--prefix", prefix],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            until("the canary has it", lambda: web_lab.tcp_connect(8082, timeout=0.3) == "open")
            assert db_lab.tcp_connect(8082, timeout=0.3) == "timeout"  # not yet: the canary holds
            stdout, stderr = push.communicate(timeout=60)
            assert push.returncode == 0, stderr
            assert "every canary applied it" in stderr and "pushed" in stdout
            until("every host has it", lambda: db_lab.tcp_connect(8082, timeout=0.3) == "open")
            assert store.read("canary/")[1] == {}

            # A policy that passes the push's check but clashes on the canary (its 'web' policy
            # has a rule of that name): the canary reports it, the push takes it back.
            clash = write(tmp_path, "version: 1\nrules:\n  - {name: web-only, proto: tcp, dport: 9, action: drop}\n",
                          "clash.yaml")
            res = bpfwall("fleet", "push", clash, "--name", "extra", "--canary", "role=web", "--wait", "2",
                          "--etcd", etcd.url, "--prefix", prefix)
            assert res.returncode == 1, res.stderr
            assert "canary of policy extra failed on web1: " in res.stderr and "duplicate rule name" in res.stderr
            assert "taken back" in res.stderr
            s = statuses(etcd, prefix)
            assert s["web1"]["ok"] and "extra" not in s["web1"]["policies"] and "extra" not in s["db1"]["policies"]
            assert store.read("policies/extra")[1] == {} and store.read("canary/")[1] == {}
            res = bpfwall("fleet", "push", clash, "--name", "extra", "--canary", "role=nothing",
                          "--etcd", etcd.url, "--prefix", prefix)
            assert res.returncode == 1 and "no host reports the label role=nothing" in res.stderr


def test_a_policy_that_would_cut_an_ssh_session_is_refused_on_that_host(tmp_path):
    """As apply refuses it: the host keeps its rules and reports why, without --force advice."""
    scope_mod.ensure_bpffs()
    prefix = f"/bwtest-{os.getpid()}"
    with_ssh = BASE + "  - {name: ssh, proto: tcp, dport: 2222, action: accept}\n"
    with Lab("fssh") as lab, Etcd() as etcd:
        store = Store(etcd.url, prefix)
        store.put("policies/base", with_ssh)
        sshd = fake_sshd(lab)
        conn = None
        try:
            with agent(etcd, prefix, "h1", lab, tmp_path):
                until("the host applies", lambda: statuses(etcd, prefix).get("h1", {}).get("ok") is True)
                conn = lab.tcp_session(2222)
                revision = store.put("policies/base", BASE)  # no rule for the session: the policy drops it
                until("the host refuses the policy", lambda: (lambda h: h.get("revision", 0) >= revision
                      and not h["ok"])(statuses(etcd, prefix).get("h1", {})))
                error = statuses(etcd, prefix)["h1"]["error"]
                assert "lock out SSH" in error and f"{CLIENT_V4}:" in error and "--force" not in error, error
                assert lab.tcp_connect(2222) == "open", "the rules in force still let SSH in"
        finally:
            if conn is not None:
                conn.close()
            sshd.stdin.close()
            sshd.kill()
            sshd.wait()


SECRET = "root:$y$j9T$notarealhash:20228:0:99999:7:::"


def test_a_policy_reads_no_file_of_the_host_outside_its_files_dir(labs, tmp_path):
    """Who may write to the store must not read the hosts' files: a policy naming a root-only
    file fails on the host without the file being read, and no error brings a line of any
    host file back into the store; files under the agent's --files-dir are read, links out
    of it are not."""
    lab = labs[0]
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    files = tmp_path / "files"
    files.mkdir()
    (files / "good.netset").write_text("# a list\n192.0.2.0/24\n198.51.100.7\n")
    (files / "bad.netset").write_text("192.0.2.9\n" + SECRET + "\n")
    (files / "leak.netset").symlink_to(secret)
    prefix = f"/bwtest-files-{os.getpid()}"

    def policy_with(path: str) -> str:
        return (f"version: 1\npolicy: {{ingress: accept}}\nsets:\n  s: {{type: cidr, files: [{json.dumps(path)}]}}\n"
                "rules:\n  - {name: drop-s, src: '@s', action: drop}\n")

    with Etcd() as etcd:
        store = Store(etcd.url, prefix)
        # The CLI refuses such a policy before it is written ...
        res = fleet(etcd, prefix, "push", write(tmp_path, policy_with(str(secret)), "p.yaml"), "--name", "p")
        assert res.returncode == 2 and "relative to the agent's --files-dir" in res.stderr, res.stderr
        # ... and whoever writes to the store directly gets no further on a host.
        revision = store.put("policies/p", policy_with(str(secret)))
        with agent(etcd, prefix, "h1", lab, tmp_path, extra=("--files-dir", str(files))):
            def reported(at: int) -> Callable[[], bool]:
                return lambda: "h1" in (s := statuses(etcd, prefix)) and s["h1"]["revision"] >= at

            until("the host reports the absolute path refused", reported(revision))
            status = statuses(etcd, prefix)["h1"]
            assert not status["ok"] and "relative to the agent's --files-dir" in json.dumps(status)
            for name, why in (("leak.netset", "leads out of the agent's --files-dir"),
                              ("../shadow", "without '..'"), ("bad.netset", "the line is not shown")):
                revision = store.put("policies/p", policy_with(name))
                until(f"the host reports {name} refused", reported(revision))
                status = statuses(etcd, prefix)["h1"]
                assert not status["ok"] and why in json.dumps(status), status
                _, kvs = store.read("")
                assert not any(b"notarealhash" in v for v in kvs.values()), "a host file's line reached the store"
            revision = store.put("policies/p", policy_with("good.netset"))
            until("the host applies the file under --files-dir", reported(revision))
            assert statuses(etcd, prefix)["h1"]["ok"]
            listed = bpfwall("set", "list", "s", "--netns", lab.server_ns).stdout.split()
            assert listed == ["192.0.2.0/24", "198.51.100.7"], listed


GUARDED = """\
version: 1
policy: {ingress: drop}
sets:
  blocked: {type: cidr, fleet: true}
rules:
  - {name: no-blocked, src: "@blocked", action: drop}
  - {name: ssh, proto: tcp, dport: 22, action: accept}
"""


def test_a_fleet_set_element_that_would_cut_the_hosts_ssh_is_refused_and_reported(labs, tmp_path):
    lab = labs[0]
    lab.tcp_server(22)
    prefix = f"/bwtest-guard-{os.getpid()}"
    operator = {"SSH_CONNECTION": f"{CLIENT_V4} 40022 10.200.0.1 22"}  # the host's session, from the client
    with Etcd() as etcd:
        assert fleet(etcd, prefix, "push", write(tmp_path, GUARDED, "g.yaml"), "--name", "g").returncode == 0
        with agent(etcd, prefix, "h1", lab, tmp_path, env=operator):
            until("the host applies", lambda: statuses(etcd, prefix).get("h1", {}).get("ok") is True)
            assert fleet(etcd, prefix, "set", "add", "blocked", "10.200.0.0/24").returncode == 0
            until("the host reports the refusal", lambda: statuses(etcd, prefix)["h1"]["ok"] is False)
            error = statuses(etcd, prefix)["h1"]["error"]
            assert "refusing to add to set 'blocked': it would lock out SSH" in json.dumps(error), error
            assert lab.tcp_connect(22) == "open"
            assert fleet(etcd, prefix, "set", "del", "blocked", "10.200.0.0/24").returncode == 0
            assert fleet(etcd, prefix, "set", "add", "blocked", "10.200.9.0/24").returncode == 0
            until("the host is ok again", lambda: statuses(etcd, prefix)["h1"]["ok"] is True)
            listed = bpfwall("set", "list", "blocked", "--netns", lab.server_ns).stdout.split()
            assert listed == ["10.200.9.0/24"], listed
