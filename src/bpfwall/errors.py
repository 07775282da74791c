"""Errors the CLI turns into one line on stderr and an exit status."""

from __future__ import annotations


class BpfwallError(Exception):
    """A problem the user can act on; exit_code says which kind."""

    exit_code = 1


class InputError(BpfwallError):
    """Bad input: a rule file, a set file, an argument. Exit status 2."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RuntimeFailure(BpfwallError):
    """The system said no: no root, no interface, a kernel error. Exit status 1."""

    exit_code = 1
