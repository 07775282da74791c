"""`bpfwall exporter`: a real HTTP scrape on loopback, parsed with prometheus_client's own parser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import apply, write
from tests.e2e.test_cli import RULES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list, **labels: str) -> float:
    return next(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_exporter_serves_the_counters_and_follows_applies(lab, tmp_path):
    path = write(tmp_path, RULES)
    apply(lab, path)
    port = free_port()
    # No --netns: one exporter serves every scope, each labelled with its namespace.
    proc = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "exporter", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                metrics = scrape(port)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the exporter never answered"
                time.sleep(0.2)
        assert value(metrics["bpfwall_up"], netns=lab.server_ns) == 1
        assert value(metrics["bpfwall_up"], netns="") == 0  # the host's scope: nothing applied there
        for _ in range(5):
            lab.udp_query(9999, timeout=0.05)
        metrics = scrape(port)
        me = lab.server_if
        assert value(metrics["bpfwall_rule_packets"], netns=lab.server_ns, interface=me, rule="count-me",
                     direction="ingress", action="drop") == 5
        assert value(metrics["bpfwall_rule_packets"], netns=lab.server_ns, interface="(other)", rule="count-me") == 0
        assert value(metrics["bpfwall_rule_bytes"], netns=lab.server_ns, interface=me, rule="count-me") == 5 * 46
        assert value(metrics["bpfwall_drops"], netns=lab.server_ns, interface=me, reason="rule") >= 5
        assert value(metrics["bpfwall_set_elements"], netns=lab.server_ns, set="office", type="cidr") == 2
        assert value(metrics["bpfwall_interface_info"], netns=lab.server_ns, interface=lab.server_if) == 1
        assert "bpfwall_program_runs" in metrics and "bpfwall_policy_packets" in metrics
        # a re-apply (of the same rules, in a file changed by a comment, so that it is not
        # the no-op an unchanged file is): the same process follows it, and the counters carry
        with open(path, "a") as f:
            f.write("# applied again\n")
        apply(lab, path)
        metrics = scrape(port)
        assert value(metrics["bpfwall_generation"], netns=lab.server_ns) == 2
        assert value(metrics["bpfwall_rule_packets"], netns=lab.server_ns, interface=me, rule="count-me") == 5
        # bpfwall down: the exporter stays up
        from tests.e2e.conftest import bpfwall

        assert bpfwall("down", "--netns", lab.server_ns).returncode == 0
        # (serving every scope, a namespace's series go with its scope; the host's stays)
        ups = {s.labels["netns"]: s.value for s in scrape(port)["bpfwall_up"]}
        assert lab.server_ns not in ups and ups[""] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_exporter_refuses_a_namespace_that_does_not_exist():
    res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "exporter", "--netns", "bpfwall-nosuch-ns"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and res.stderr.strip() == (
        "bpfwall: --netns: network namespace 'bpfwall-nosuch-ns' does not exist ('ip netns list' names those that do)")


def test_exporter_refuses_a_bad_listen_address():
    res = subprocess.run([sys.executable, "-m", "bpfwall.cli", "exporter", "--listen", "nonsense"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr


def test_grafana_dashboard_uses_only_metrics_the_exporter_has():
    import json
    import re

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "contrib", "grafana", "bpfwall.json")) as f:
        dash = json.load(f)
    exported = {"bpfwall_up", "bpfwall_generation", "bpfwall_conntrack_entries", "bpfwall_conntrack_max_entries",
                "bpfwall_rule_packets_total", "bpfwall_rule_bytes_total", "bpfwall_drops_total",
                "bpfwall_policy_packets_total", "bpfwall_set_elements", "bpfwall_program_run_seconds_total",
                "bpfwall_program_runs_total"}
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"bpfwall_\w+", t["expr"])}
    assert used and used <= exported


def test_exporter_answers_404_off_metrics_and_listens_on_ipv6():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bpfwall.cli", "exporter", "--listen", f"[::1]:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith(f"serving http://[::1]:{port}/metrics"), "the URL, bracketed"
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as r:
            assert r.status == 200 and b"bpfwall_up" in r.read()
        for path in ("/", "/metric", "/metrics/x"):
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(f"http://[::1]:{port}{path}", timeout=10)
            assert exc.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
