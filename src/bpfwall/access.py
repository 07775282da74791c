"""Who may read the firewall. Pins and state files are root's alone (0600, directories
0700), unless the rule file names a `group:`: its members may then read what stats,
status and the exporter need (the counters, the log bookkeeping, the connection
table, the state files), and nothing else. Reading takes no capability on this
kernel: opening a pinned map read-only needs only read permission on the pin.
Writing stays root's: maps are opened read-only, links and programs not at all.
"""

from __future__ import annotations

import grp
import os
import stat

from .errors import RuntimeFailure
from .maps import READ_GENERATION, READ_SCOPE  # the pins a reader opens


def group_id(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise RuntimeFailure(f"group '{name}' (the rule file's 'group:') does not exist on this host: "
                             f"create it (groupadd {name}) or remove the key") from None


def _set(path: str, gid: int | None, shared_mode: int, private_mode: int) -> None:
    """Owner root; group gid with shared_mode, or root's group with private_mode."""
    if os.path.lexists(path):
        os.chown(path, 0, 0 if gid is None else gid, follow_symlinks=False)
        os.chmod(path, private_mode if gid is None else shared_mode)


def share(pin_root: str, pin_dir: str, generation_dir: str, state_root: str, state_files: list[str],
          gid: int | None) -> list[str]:
    """Sets owners and modes for the generation in force; returns notes for the operator."""
    notes = []
    if gid is not None:
        for d in (pin_root, state_root):
            os.chmod(d, 0o711)  # passable, not listable: names alone give nothing away
    _set(pin_dir, gid, 0o710, 0o700)
    _set(generation_dir, gid, 0o710, 0o700)
    for direction in ("ingress", "egress"):
        d = os.path.join(generation_dir, direction)
        _set(d, gid, 0o710, 0o700)
        for name in READ_GENERATION:
            _set(os.path.join(d, name), gid, 0o640, 0o600)
    for name in READ_SCOPE:
        _set(os.path.join(pin_dir, name), gid, 0o640, 0o600)
    for path in state_files:
        _set(path, gid, 0o640, 0o600)
    if gid is not None:
        mode = os.stat(os.path.dirname(pin_root)).st_mode
        if not mode & stat.S_IXOTH:
            notes.append(f"{os.path.dirname(pin_root)} is mode {stat.S_IMODE(mode):o}: the group's members "
                         f"cannot reach the pins below it (chmod o+x {os.path.dirname(pin_root)} lets them pass)")
    return notes


def denied(what: str, group: str | None) -> RuntimeFailure:
    """The error of a reader without permission: what it needs, said plainly."""
    who = (f"root or membership of group '{group}' (the rule file's 'group:')" if group else
           "root (the rule file names no 'group:' whose members may read it)")
    return RuntimeFailure(f"permission denied reading {what}: this needs {who}")


def denied_file(path: str) -> RuntimeFailure:
    """denied() for a state file: its group says who may read it, even to one who cannot."""
    group = None
    try:
        gid = os.stat(path).st_gid
        if gid != 0:
            group = grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        pass
    return denied(path, group)
