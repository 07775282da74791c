"""Who owns a socket: its cgroup (v2) and its user, as rules name them.

Rule files name a cgroup by its path relative to the cgroup2 mount
(`system.slice/postgresql.service`) and a user by name or uid. The data plane
knows a cgroup by its id, which on cgroup2 is the inode number of its
directory, and its depth (level) below the root; it knows a user by uid.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from .shared import CGROUP_MAX_LEVEL, CGROUP_PATH_MAX


@dataclass(frozen=True)
class Owner:
    """A socket's owner as the reference model and explain take it: its cgroup's path
    relative to the cgroup2 mount ("" for the root) and its uid."""

    cgroup: str = ""
    uid: int = 0


def cgroup2_mount() -> str | None:
    """Where cgroup v2 is mounted (the first cgroup2 line of /proc/mounts), or None.
    Hybrid hosts have it at /sys/fs/cgroup/unified, unified ones at /sys/fs/cgroup."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1].replace("\\040", " ")
    except OSError:
        return None
    return None


def normalise_cgroup(path: str) -> tuple[str, str | None]:
    """(the path without leading and trailing slashes, an error or None)."""
    if not isinstance(path, str):
        return "", "a cgroup is a path such as system.slice/backup.service"
    clean = path.strip("/")
    if not clean:
        return "", "the root cgroup holds every process: leave cgroup out instead"
    parts = clean.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "", f"'{path}' is not a plain path below the cgroup2 mount (no '.', '..' or '//')"
    if any(ord(c) < 32 for c in clean):
        return "", "a cgroup path has no control characters"
    # The data plane knows a cgroup made after an apply by "/" + path + NUL in a fixed key.
    if len(clean.encode()) + 2 > CGROUP_PATH_MAX:
        return "", f"a cgroup path is at most {CGROUP_PATH_MAX - 2} bytes"
    if len(parts) > CGROUP_MAX_LEVEL:
        return "", f"a cgroup at most {CGROUP_MAX_LEVEL} levels deep"
    return clean, None


def cgroup_level(path: str) -> int:
    """Depth below the root: `a` is 1, `a/b` 2."""
    return path.count("/") + 1


def cgroup_covers(rule_path: str, cgroup: str) -> bool:
    """Whether a rule naming rule_path matches a socket in cgroup: the cgroup itself or
    any cgroup below it."""
    return cgroup == rule_path or cgroup.startswith(rule_path + "/")


def cgroup_id(path: str, mount: str | None = None) -> int | None:
    """The id of the cgroup at path (relative to the mount), or None if it does not exist."""
    mount = mount or cgroup2_mount()
    if mount is None:
        return None
    try:
        return os.stat(os.path.join(mount, path)).st_ino
    except OSError:
        return None


def cgroup_of_pid(pid: int) -> str | None:
    """The cgroup2 path of a process, relative to the mount ("" for the root)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip().strip("/")
    except OSError:
        return None
    return None


def resolve_user(value: object) -> tuple[int | None, str | None]:
    """(uid, error): a uid as a number, or a user name looked up on this host."""
    if isinstance(value, bool):
        return None, "a user is a name or a uid"
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        uid = int(value)
        if not 0 <= uid < 0xFFFFFFFF:
            return None, f"uid {uid} is out of range (0-4294967294)"
        return uid, None
    if not isinstance(value, str) or not value:
        return None, "a user is a name or a uid"
    try:
        return pwd.getpwnam(value).pw_uid, None
    except KeyError:
        return None, f"no user '{value}' on this host (name a uid to mean one that is not here yet)"


def user_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def user_label(uid: int) -> str:
    """A uid as a person reads it: the name where the host has one."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def absent(ruleset) -> list[str]:
    """Warnings for the cgroups and uids the rule set names that this host does not have now:
    a cgroup is matched from the moment it is made; a uid without a user still matches."""
    out = []
    cgroups, uids = ruleset.cgroups(), ruleset.users()
    mount = cgroup2_mount() if cgroups else None
    if cgroups and mount is None:
        out.append("this host has no cgroup v2 mount: rules with cgroup match nothing here")
    elif cgroups:
        for path in cgroups:
            if cgroup_id(path, mount) is None:
                out.append(f"cgroup {path} does not exist now (under {mount}): its rules match "
                           "from the moment it is made")
    for uid in uids:
        if not user_exists(uid):
            out.append(f"uid {uid} has no user on this host")
    return out
