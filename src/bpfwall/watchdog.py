"""The rollback of `apply --confirm`: python -m bpfwall.watchdog NETNS TOKEN.

Started by apply in a session of its own, so it outlives the CLI, its terminal and
the SSH connection. It waits for the deadline in the confirm file; if the apply it
was started for (TOKEN) is still unconfirmed then, it puts the previous rule set
back. A confirm, or a newer apply, removes or replaces the file and it just exits.
"""

from __future__ import annotations

import sys
import syslog

from . import transaction
from .scope import Scope


def main(argv: list[str]) -> int:
    ns, token = (argv[0] or None), argv[1]
    syslog.openlog("bpfwall", syslog.LOG_PID, syslog.LOG_DAEMON)
    try:
        what = transaction.await_confirmation(Scope(ns), token)
    except Exception as exc:  # nobody sees stderr: say it where an operator looks
        syslog.syslog(syslog.LOG_ERR, f"rollback of an unconfirmed apply failed: {exc}; the next "
                      "bpfwall apply, status or down rolls it back")
        return 1
    if what:
        syslog.syslog(syslog.LOG_WARNING, what)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
