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


EXCERPT_CHARS = 60
LINE_MAX = 400  # an error line longer than this is cut: it quotes a value, not a file


def excerpt(value: object) -> str:
    """A bad value as an error quotes it: the value (repr unless a string), at most
    EXCERPT_CHARS characters of it, and how long it was when cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= EXCERPT_CHARS:
        return text
    return f"{text[:EXCERPT_CHARS]}... ({len(text):,} characters)"


def clip(line: str) -> str:
    """An error line at most LINE_MAX characters long."""
    if len(line) <= LINE_MAX:
        return line
    return f"{line[:LINE_MAX]}... ({len(line):,} characters)"
