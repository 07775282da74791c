"""What this kernel lets BPF do, probed at run time, and what each missing feature costs.

Hardened and vendor kernels refuse features that upstream kernels have: some refuse
live-frame test runs (BPF_F_TEST_XDP_LIVE_FRAMES) and every program that needs a BPF
trampoline (fentry, fexit, freplace, LSM). Each probe loads a trivial program or map
(libbpf's own probes where it has one) and never attaches anything anywhere. The
results go into `status --json` and `check`, and the benchmark and tests choose by
them instead of catching a failure halfway.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import asdict, dataclass

from . import libbpf

# enum bpf_prog_type / bpf_map_type (include/uapi/linux/bpf.h)
PROG_SCHED_CLS, PROG_XDP, PROG_CGROUP_SOCK_ADDR = 3, 6, 18
PROG_TRACING, PROG_EXT, PROG_LSM = 26, 28, 29
MAP_PROG_ARRAY, MAP_LPM_TRIE, MAP_RINGBUF = 3, 11, 27


@dataclass(frozen=True)
class Feature:
    available: bool
    needed_for: str
    without_it: str  # what its absence costs, in the operator's words


def _probe_live_frames() -> bool:
    """A live-frame test run of a two-instruction XDP_DROP program as if received on the
    loopback interface: nothing is sent, nothing attached. EPERM (a hardened kernel),
    EINVAL (a kernel before 5.18) or anything else: not available."""
    try:
        fd = libbpf.load_xdp_drop()
    except OSError:
        return False
    try:
        libbpf.test_run_xdp_live(fd, bytes(60), ifindex=1, repeat=1)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _probe_bpf_stats() -> bool:
    try:
        fd = libbpf.enable_stats()
    except OSError:
        return False
    os.close(fd)
    return True


def _probe_trampolines() -> bool:
    return any(libbpf.probe_prog_type(t) for t in (PROG_TRACING, PROG_EXT, PROG_LSM))


@functools.cache
def probe() -> dict[str, Feature]:
    """Every probe, once a process (they need CAP_BPF: run as root)."""
    return {
        "xdp": Feature(libbpf.probe_prog_type(PROG_XDP), "the ingress program",
                       "bpfwall cannot run on this kernel"),
        "tc": Feature(libbpf.probe_prog_type(PROG_SCHED_CLS), "the egress program (tcx)",
                      "no egress rules"),
        "lpm_trie": Feature(libbpf.probe_map_type(MAP_LPM_TRIE), "address classes and IPv6 networks in sets",
                            "bpfwall cannot run on this kernel"),
        "prog_array": Feature(libbpf.probe_map_type(MAP_PROG_ARRAY), "the dispatcher's tail calls",
                              "bpfwall cannot run on this kernel"),
        "ringbuf": Feature(libbpf.probe_map_type(MAP_RINGBUF), "log: and `bpfwall log`",
                           "rules with log: cannot be applied"),
        "cgroup_sock_addr": Feature(libbpf.probe_prog_type(PROG_CGROUP_SOCK_ADDR),
                                    "owner rules judged at connect() and sendmsg()",
                                    "rules with cgroup: or user: cannot be applied"),
        "bpf_stats": Feature(_probe_bpf_stats(), "the benchmark's per-program cost on real traffic",
                             "the benchmark reports CPU per packet only"),
        "live_frames": Feature(_probe_live_frames(), "the benchmark's saturation rate (Mpps)",
                               "the benchmark and tests send through an AF_PACKET ring and report "
                               "cost per packet, not the saturation rate"),
        "trampolines": Feature(_probe_trampolines(),
                               "fentry/freplace/LSM: libxdp's multi-program dispatcher",
                               "libxdp cannot put another XDP program beside bpfwall on one "
                               "interface; bpfwall itself needs none"),
    }


def report() -> dict[str, dict] | None:
    """The probe results as JSON-ready dicts, or None without the rights to probe."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(OSError):
        return {name: asdict(f) for name, f in probe().items()}
    return None


def missing(report_: dict[str, dict] | None) -> list[str]:
    """One line per missing feature: its name, what needs it and what its absence costs."""
    return [f"{name} not available (for {f['needed_for']}): {f['without_it']}"
            for name, f in (report_ or {}).items() if not f["available"]]


def live_frames() -> bool:
    """Whether live-frame test runs work here (probed once)."""
    return probe()["live_frames"].available
