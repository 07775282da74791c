"""Fleet convergence: N agents, each in a network namespace of its own with a veth pair to
protect, on one etcd (Debian's, on loopback). Measures, from the etcd write to every host's
status showing that revision, a one-rule policy change and a fleet set element; and the
agents' memory and CPU at rest. Writes bench/results/fleet-N.json.

    python bench/fleet.py [--hosts 20] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.etcd import Etcd  # noqa: E402

from bpfwall import scope as scope_mod  # noqa: E402
from bpfwall.fleet.store import Store  # noqa: E402

POLICY = """version: 1
policy: {{ingress: drop}}
sets:
  blocked: {{type: cidr, fleet: true}}
rules:
  - {{name: no-blocked, src: "@blocked", action: drop}}
  - {{name: ssh, proto: tcp, dport: 22, action: accept}}
  - {{name: web, proto: tcp, dport: {port}, action: accept}}
"""


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def converge(store: Store, hosts: list[str], revision: int, timeout: float = 120.0) -> dict[str, float]:
    """Seconds until each host's status shows revision (polled every 10 ms)."""
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(hosts):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"not converged in {timeout} s: {sorted(set(hosts) - set(seen))}")
        _, kvs = store.read("status/")
        now = time.monotonic() - t0
        for host in hosts:
            value = kvs.get(f"status/{host}")
            if host not in seen and value and json.loads(value).get("revision", 0) >= revision:
                seen[host] = now
        time.sleep(0.01)
    return seen


def wait_for_spares(namespaces: list[str], timeout: float = 600.0) -> float:
    """Seconds until every agent has loaded its spare (idle) generation, which it does after
    its first apply, so that the changes measured are what an agent that has settled does."""
    t0 = time.monotonic()
    scopes = [scope_mod.Scope(ns) for ns in namespaces]
    while not all((state := s.read_state()) is not None and state.idle for s in scopes):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"spare generations not loaded in {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def rest_usage(pids: list[int], seconds: float = 10.0) -> tuple[float, float]:
    """Mean RSS (MiB) and CPU (% of one core) of the agents, idle for `seconds`."""
    def cpu(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = {pid: cpu(pid) for pid in pids}
    time.sleep(seconds)
    ticks = sum(cpu(pid) - before[pid] for pid in pids) / os.sysconf("SC_CLK_TCK")
    rss = []
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            rss.append(next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024)
    return statistics.mean(rss), 100 * ticks / seconds / len(pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    scope_mod.ensure_bpffs()
    pid = os.getpid()
    names = [f"bpfwall-fleet-{pid}-{i}" for i in range(args.hosts)]
    hosts = [f"h{i}" for i in range(args.hosts)]
    agents: list[subprocess.Popen] = []
    work = tempfile.mkdtemp(prefix="bpfwall-fleet-")
    prefix = f"/bwbench-{pid}"
    try:
        with Etcd() as etcd:
            store = Store(etcd.url, prefix)
            first = store.put("policies/base", POLICY.format(port=1000))
            for i, ns in enumerate(names):
                run("ip", "netns", "add", ns)
                run("ip", "-n", ns, "link", "add", "fa", "type", "veth", "peer", "name", "fb")
                run("ip", "-n", ns, "link", "set", "fa", "up")
                run("ip", "-n", ns, "link", "set", "fb", "up")
                log = open(os.path.join(work, f"{hosts[i]}.log"), "w")
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "bpfwall.cli", "agent", "--etcd", etcd.url, "--prefix", prefix,
                     "--host", hosts[i], "--label", f"n={i}", "-i", "fa", "--netns", ns,
                     "--state-dir", os.path.join(work, "state")], stdout=log, stderr=subprocess.STDOUT))
            t0 = time.monotonic()
            converge(store, hosts, first, timeout=600)
            start = time.monotonic() - t0
            print(f"{args.hosts} agents up and applied in {start:.1f} s", file=sys.stderr)
            spares = wait_for_spares(names)
            print(f"their spare generations loaded {spares:.1f} s later", file=sys.stderr)
            time.sleep(2)
            rss, cpu = rest_usage([a.pid for a in agents])
            results: dict[str, list[float]] = {"policy change": [], "set element": []}
            for r in range(args.rounds):
                revision = store.put("policies/base", POLICY.format(port=1001 + r))
                results["policy change"] += converge(store, hosts, revision).values()
                revision = store.put(f"sets/blocked/10.200.{200 + r // 256}.{r % 256}/32", "")
                results["set element"] += converge(store, hosts, revision).values()
            out = {"hosts": args.hosts, "rounds": args.rounds, "cpus": os.cpu_count(), "startup_s": start,
                   "spares_s": spares,
                   "agent_rss_mib": rss, "agent_cpu_pct_at_rest": cpu,
                   "convergence_s": {k: {"p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}
                                     for k, v in results.items()}}
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            try:
                a.wait(10)
            except subprocess.TimeoutExpired:
                a.kill()
        from bpfwall import transaction
        from bpfwall.scope import Scope

        for ns in names:
            try:
                transaction.down(Scope(ns))
            except Exception as exc:  # noqa: BLE001 - a bench cleans what it can
                print(f"down {ns}: {exc}", file=sys.stderr)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    os.makedirs("bench/results", exist_ok=True)
    path = f"bench/results/fleet-{args.hosts}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{args.hosts} hosts, {args.rounds} rounds; agent at rest: {rss:.0f} MiB RSS, {cpu:.2f}% of a core")
    print(f"{'change':30} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
    for k, v in out["convergence_s"].items():
        print(f"{k:30} {v['p50']:7.3f} {v['p99']:7.3f} {v['max']:7.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
