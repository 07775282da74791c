"""A smoke run of `bpfwall bench --quick`: every output is produced; no timing is asserted.
And a bench that cannot measure a part says why and goes on."""

from __future__ import annotations

import json

from bpfwall import bench
from bpfwall.bench import stream
from tests.e2e.conftest import bpfwall


def test_bench_quick_writes_table_json_and_charts(tmp_path):
    res = bpfwall("bench", "--quick", "--out", str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"machine", "features", "per_packet", "memory", "flood", "stream", "latency", "headline"} <= set(data)
    assert data["skipped"] == {}, data["skipped"]
    # kernel memory beside nftables (a machine-wide difference: its sign is not asserted)
    assert set(data["memory"]["kernel_bytes"]) == {"bpfwall", "nft"}
    sizes = {(r["kind"], r["size"], r["packet"]) for r in data["per_packet"]["rows"]}
    assert ("rules", 1000, "none") in sizes and ("set", 100_000, "first") in sizes
    flood = data["flood"]
    variants = {r["variant"] for r in flood["rows"]}
    assert variants == {"xdp-drop", "bpfwall", "nft-netdev", "nft-input", "iptables-input"}
    for r in flood["rows"]:
        # the frames sent reached the firewall and were dropped by it (the rate is offered,
        # not forced: a firewall slower than it loses the rest at the receiving queue; a
        # trivial XDP_DROP also drops the lab's few neighbour solicitations)
        assert 0 < r["dropped"] <= r["packets"] + 100, r
        assert r["softirq_ns"] >= 0
        # the XDP programs' own run time, from the kernel's bpf_stats under the flood
        assert (r["prog_ns"] is not None) == (r["variant"] in ("xdp-drop", "bpfwall")), r
    blocklist = flood["blocklist"]
    assert {r["variant"] for r in blocklist["rows"]} == {"xdp-drop", "reference", "bpfwall", "nft-netdev",
                                                         "iptables-ipset"}
    assert all(r["dropped"] > 0 for r in blocklist["rows"]), "every firewall dropped the blocklist's flood"
    assert next(r for r in blocklist["rows"] if r["variant"] == "bpfwall")["prog_vs_reference"] > 0
    hosts = blocklist["hosts"]
    if "skipped" in hosts:  # xdp-tools missing, or xdp-filter in use here: said, not hidden
        assert "xdp-filter" in hosts["skipped"] and "xdp-filter: not measured" in res.stdout
    else:
        assert {r["variant"] for r in hosts["rows"]} == {"xdp-drop", "reference", "bpfwall", "xdp-filter"}
        assert all(r["dropped"] > 0 for r in hosts["rows"]), "xdp-filter and bpfwall dropped the flood"
        assert (tmp_path / "flood-hosts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["variant"] for r in data["stream"]["rows"]} == {"xdp-pass", "bpfwall"}
    assert all(r["gbps"] > 0 for r in data["stream"]["rows"])
    assert {"bpfwall_egress_ns", "bpfwall_ingress_ns"} <= set(data["stream"]["rows"][1])
    assert {r["tool"] for r in data["latency"]["rows"]} == {"bpfwall", "nft", "iptables"}
    for name in ("per_packet.png", "flood.png", "flood-blocklist.png", "stream.png", "latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Per packet", "Flood", "TCP stream", "Control plane", "against each peer"):
        assert title in res.stdout
    # every headline figure measured in a full quick run (xdp-filter's only where it is here)
    assert all(h["value"] is not None for h in data["headline"] if "xdp-filter" not in h["figure"])
    if not data["features"]["live_frames"]["available"]:
        assert "saturation rate: not measured" in res.stdout


def test_a_part_that_cannot_run_is_reported_and_the_rest_measured(tmp_path, monkeypatch):
    """iperf3 missing: the stream part is skipped with the reason, the per-packet part
    still measured, and the run counts as having measured something."""
    monkeypatch.setattr(stream.shutil, "which", lambda name: None)
    plan = bench.Plan.quick()
    plan.parts = ["stream", "packet"]
    plan.rule_counts, plan.set_sizes, plan.repeat, plan.trials = [1], [1000], 1000, 1
    results = bench.run(plan, str(tmp_path), lambda msg: None)
    assert results["skipped"] == {"stream": "iperf3 is not installed (Debian package iperf3)"}
    assert "per_packet" in results and bench.measured(results)
    plan.parts = ["stream"]
    assert not bench.measured(bench.run(plan, str(tmp_path), lambda msg: None))
