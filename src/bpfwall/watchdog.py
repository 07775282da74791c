"""The rollback of `apply --confirm`: python -m bpfwall.watchdog NETNS TOKEN.

Started by apply in a session of its own, so it outlives the CLI, its terminal and
the SSH connection. It waits for the deadline in the confirm file; if the apply it
was started for (TOKEN) is still unconfirmed then, it puts the previous rule set
back. A confirm, or a newer apply, removes or replaces the file and it just exits.
"""

from __future__ import annotations

import sys
import syslog
import time

from .dataplane import Scope


def main(argv: list[str]) -> int:
    ns, token = (argv[0] or None), argv[1]
    scope = Scope(ns)
    while True:
        pending = scope.pending_confirm()
        if pending is None or pending.get("token") != token:
            return 0
        left = pending["deadline"] - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 1.0))
    syslog.openlog("bpfwall", syslog.LOG_PID, syslog.LOG_DAEMON)
    try:
        what = scope.expire(token)
    except Exception as exc:  # nobody sees stderr: say it where an operator looks
        syslog.syslog(syslog.LOG_ERR, f"rollback of an unconfirmed apply failed: {exc}; the next "
                      "bpfwall apply, status or down rolls it back")
        return 1
    if what:
        syslog.syslog(syslog.LOG_WARNING, what)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
