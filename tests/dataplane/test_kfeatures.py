"""The kernel feature probe: each answer agrees with an independent look at the same
feature, and the answers reach `status --json` and `check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bpfwall import kfeatures, libbpf
from bpfwall.lab import lab_object_path

EXPECTED = {"xdp", "tc", "lpm_trie", "prog_array", "ringbuf", "cgroup_sock_addr", "bpf_stats", "live_frames",
            "trampolines"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpfwall.cli", *args], capture_output=True, text=True, timeout=60)


def test_every_feature_is_probed_and_what_bpfwall_needs_is_here():
    got = kfeatures.probe()
    assert set(got) == EXPECTED
    for name in ("xdp", "tc", "lpm_trie", "prog_array", "ringbuf"):
        assert got[name].available, f"{name}: bpfwall's own tests run here, so the kernel has it"
    assert all(f.needed_for and f.without_it for f in got.values())


def test_live_frames_answer_matches_a_live_run_of_the_lab_program():
    with libbpf.BpfObject(lab_object_path()) as obj:
        obj.load()
        try:
            libbpf.test_run_xdp_live(obj.prog_fd("xdp_drop_all"), bytes(60), ifindex=1, repeat=1)
            works = True
        except OSError:
            works = False
    assert kfeatures.live_frames() is works


def test_trampolines_answer_matches_bpftool():
    out = subprocess.run(["bpftool", "feature", "probe", "kernel"], capture_output=True, text=True,
                         check=True).stdout
    bpftool_says = any(f"program_type {t} is available" in out for t in ("tracing", "ext", "lsm"))
    assert kfeatures.probe()["trampolines"].available is bpftool_says


def test_status_and_check_report_the_features(tmp_path):
    res = _cli("status", "--json")
    assert res.returncode == 0, res.stderr
    features = json.loads(res.stdout)["features"]
    assert set(features) == EXPECTED
    assert all(set(f) == {"available", "needed_for", "without_it"} for f in features.values())
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\npolicy: {ingress: accept}\n")
    res = _cli("check", "-f", str(rules), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["features"] == features
    res = _cli("check", "-f", str(rules))
    missing = [name for name, f in features.items() if not f["available"]]
    for name in missing:  # each missing feature named, with what its absence costs
        assert f"kernel: {name} not available" in " ".join(res.stdout.split()), res.stdout
    if not missing:
        assert "kernel:" not in res.stdout


def test_no_feature_report_without_root():
    if os.geteuid() == 0:
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                              "from bpfwall import kfeatures; print(kfeatures.report())"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "None"
