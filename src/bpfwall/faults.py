"""Test hooks that name the steps of apply, so tests can kill or stall it at each one.

BPFWALL_TEST_KILL_AT=STEP      SIGKILL this process when it reaches STEP
BPFWALL_TEST_PAUSE_AT=STEP:S   sleep S seconds at STEP (to hold the lock, say)
BPFWALL_TEST_STEPS=PATH        append each step's name to PATH as it is reached
BPFWALL_TEST_FAIL_AT=STEP      raise OSError at STEP (a lookup the kernel refused, say)
BPFWALL_STEP_TIMES=1           print to stderr how long the run took to reach each step

Unset (the normal case), a step costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_STARTED = time.monotonic()


def step(name: str) -> None:
    env = os.environ
    if "BPFWALL_STEP_TIMES" in env:  # where an apply spends its time, for profiling by hand
        print(f"step {name}: {time.monotonic() - _STARTED:.3f} s", file=sys.stderr)
    if "BPFWALL_TEST_STEPS" in env:
        with open(env["BPFWALL_TEST_STEPS"], "a") as f:
            f.write(name + "\n")
    pause = env.get("BPFWALL_TEST_PAUSE_AT", "")
    if pause.rpartition(":")[0] == name:
        time.sleep(float(pause.rpartition(":")[2]))
    if env.get("BPFWALL_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str) -> None:
    """A lookup a test can make fail (BPFWALL_TEST_FAIL_AT=name): not an apply step, so the
    tests that kill apply at every step do not stop here, before anything changes."""
    if os.environ.get("BPFWALL_TEST_FAIL_AT") == name:
        raise OSError(f"failure injected at {name} (BPFWALL_TEST_FAIL_AT)")
