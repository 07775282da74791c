"""The lab's traffic generator: frames sent out of a lab interface through an AF_PACKET
transmit ring, by the small C program `bpfwall-flood` built beside the BPF objects.

Every kernel has AF_PACKET rings; live-frame test runs (the faster generator) are refused
by hardened kernels, so the tests and the benchmark flood through this one everywhere and
use live frames only for the saturation figure, where a probe finds them (kfeatures).

The sender runs on one CPU, and a veth delivers to its peer in the softirq that the send
raises on that same CPU: pinned with cpu=N, the receiving side's cost is what that CPU
spends in softirq (/proc/stat) beyond the sender's own system time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import RuntimeFailure


def sender_path() -> str:
    return os.path.join(os.path.dirname(__file__), "bpf", "bpfwall-flood")


@dataclass
class Sent:
    packets: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


class Sender:
    """Sends `frames` in turn out of `dev` of network namespace `ns`. spoof: each IPv4
    frame from a random source in 10.200.16.0-10.200.255.255 and a random port; sources:
    each from one of these IPv4 addresses (ints) at random. cpu: the CPU to send from."""

    def __init__(self, ns: str, dev: str, frames: list[bytes], spoof: bool = False,
                 sources: list[int] | None = None, cpu: int | None = None) -> None:
        if not os.access(sender_path(), os.X_OK):
            raise RuntimeFailure(f"the lab's sender {sender_path()} is missing: run 'make build'")
        self._tmp = tempfile.TemporaryDirectory(prefix="bpfwall-flood-")
        frames_path = os.path.join(self._tmp.name, "frames")
        with open(frames_path, "wb") as f:
            f.write(b"".join(struct.pack("<H", len(fr)) + fr for fr in frames))
        self.args = [sender_path(), "--netns", f"/run/netns/{ns}", "--dev", dev, "--frames", frames_path]
        if spoof:
            self.args.append("--spoof")
        if sources:
            self.use_sources(sources)
        if cpu is not None:
            self.args += ["--cpu", str(cpu)]

    def use_sources(self, sources: list[int]) -> None:
        """From now on, each frame from one of these IPv4 addresses (ints) at random."""
        path = os.path.join(self._tmp.name, "sources")
        with open(path, "wb") as f:
            f.write(b"".join(a.to_bytes(4, "big") for a in sources))
        if "--sources" not in self.args:
            self.args += ["--sources", path]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _limits(self, count: int = 0, seconds: float = 0, rate: float = 0) -> list[str]:
        return [*(["--count", str(count)] if count else []), *(["--seconds", f"{seconds:g}"] if seconds else []),
                *(["--rate", f"{rate:g}"] if rate else [])]

    @staticmethod
    def _result(stdout: str, stderr: str, code: int) -> Sent:
        if code == -signal.SIGTERM and not stdout:
            return Sent(0, 0.0)  # stopped before it had begun
        if code != 0:
            raise RuntimeFailure(f"bpfwall-flood: {stderr.strip() or f'exit {code}'}")
        data = json.loads(stdout)
        return Sent(int(data["sent"]), float(data["seconds"]))

    def send(self, count: int = 0, seconds: float = 0, rate: float = 0) -> Sent:
        """Sends until `count` frames or `seconds` have gone (at most `rate` a second)."""
        if not count and not seconds:
            raise ValueError("send needs a count or a duration")
        res = subprocess.run(self.args + self._limits(count, seconds, rate), capture_output=True, text=True,
                             check=False, timeout=(seconds or 600) + 60)
        return self._result(res.stdout, res.stderr, res.returncode)

    @contextlib.contextmanager
    def running(self, rate: float = 0) -> Iterator[list[Sent]]:
        """Floods while the block runs; yields a list that holds what was sent once it ends."""
        proc = subprocess.Popen(self.args + self._limits(rate=rate), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        result: list[Sent] = []
        try:
            yield result
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                stdout, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            result.append(self._result(stdout, stderr, proc.returncode))
