"""A cgroup tree of the tests' own under the cgroup2 mount, and this process moved through it:
the owner tests' socket owners and the connect tests' callers."""

from __future__ import annotations

import os

import pytest

from bpfwall import owners

BASE = f"bpfwall-test-{os.getpid()}"
# a/b is below a: a rule naming a matches a socket in a/b. gone/ never exists.
TREE = [BASE, f"{BASE}/a", f"{BASE}/a/b", f"{BASE}/c"]
NAMED = [f"{BASE}/a", f"{BASE}/a/b", f"{BASE}/c", f"{BASE}/gone"]
UIDS = [0, 1000, 1001]


class CgroupTree:
    """TREE under the cgroup2 mount, and this process moved between its cgroups."""

    def __init__(self) -> None:
        mount = owners.cgroup2_mount()
        if mount is None:
            pytest.skip("no cgroup2 mount on this host")
        self.mount = mount
        self.home = owners.cgroup_of_pid(os.getpid()) or ""
        self.made: list[str] = []
        for path in TREE:
            os.mkdir(os.path.join(mount, path))
            self.made.append(path)

    def enter(self, path: str) -> None:
        with open(os.path.join(self.mount, path, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))

    def close(self) -> None:
        self.enter(self.home)
        for path in reversed(self.made):
            os.rmdir(os.path.join(self.mount, path))
