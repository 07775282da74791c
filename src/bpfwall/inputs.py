"""The files a rule set is read from: read safely, and fingerprinted so that an apply of
files unchanged since the last one can be told at once. Kept apart from config.py so that
this check does not pay for importing pydantic."""

from __future__ import annotations

import hashlib
import os
import stat

from .errors import InputError

RULE_FILE_MAX_BYTES = 32 << 20  # 10,000 rules are about 1 MiB; big sets belong in set files
SET_FILE_MAX_BYTES = 256 << 20  # a million-prefix netset is about 18 MiB


def read_regular_file(path: str, limit: int, what: str, nofollow: bool = False) -> bytes:
    """The bytes of a regular file of at most limit bytes. A FIFO, a device (/dev/zero) or
    a larger file is refused at once, without reading it: an agent reads rule files that
    came over the network, and a careless path must not hang or exhaust the host.
    nofollow: a symbolic link as the file itself is refused (ELOOP)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)  # OSError: the caller says it
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}:1: not a regular file (a {what} must be one)")
        if st.st_size > limit:
            raise InputError(f"{path}:1: {st.st_size:,} bytes; a {what} may have at most {limit:,}")
        raw = f.read(limit + 1)
    if len(raw) > limit:  # grew while read
        raise InputError(f"{path}:1: more than {limit:,} bytes; a {what} may have at most {limit:,}")
    return raw


def inputs_unchanged(inputs: dict[str, str]) -> bool:
    """Whether every file a rule set was loaded from still holds the same bytes."""
    for path, was in inputs.items():
        try:
            if digest(read_regular_file(path, SET_FILE_MAX_BYTES, "file")) != was:
                return False
        except (OSError, InputError):
            return False
    return bool(inputs)


def digest(raw: bytes) -> str:
    """What a rule file's bytes are recorded as, to tell later whether it changed."""
    return hashlib.sha256(raw).hexdigest()
