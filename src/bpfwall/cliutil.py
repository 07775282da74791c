"""What every command shares: error handling (one line a problem, the exit codes), the
common options, and the console."""

from __future__ import annotations

import functools
import sys
from typing import Any

import click

from . import libbpf
from .errors import BpfwallError, InputError, clip


class _LazyConsole:
    """rich's Console, made on first use: rich takes a sixth of the CLI's start-up to import,
    which the commands that print one plain line (an unchanged apply, set add) need not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            import os

            from rich.console import Console

            options = dict(self._options)
            if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
                # A pipe or a file: no wrap at 80 columns in mid-phrase, and tables as wide
                # as they need (a script greps a line; a bench log keeps its names whole).
                options.update(soft_wrap=True, width=200)
            self._console = Console(**options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = _LazyConsole(highlight=False)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            for line in exc.problems:
                click.echo(clip(line), err=True)
            sys.exit(2)
        except BpfwallError as exc:
            lines = str(exc).splitlines() or ["failed"]
            click.echo(clip(f"bpfwall: {lines[0]}"), err=True)
            for line in lines[1:]:
                click.echo(clip(f"  {line}"), err=True)
            sys.exit(exc.exit_code)
        except libbpf.BpfError as exc:
            click.echo(f"bpfwall: {exc}", err=True)
            sys.exit(1)
        except PermissionError as exc:
            click.echo(f"bpfwall: {exc.filename or ''}: permission denied (run as root)", err=True)
            sys.exit(1)
        except OSError as exc:  # what no module said better: still one line, no traceback
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(clip(f"bpfwall: {where}{exc.strerror or exc}"), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


NETNS_NAME_MAX = 255  # a file name under /run/netns


def netns_name(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """--netns as given, checked before anything runs: an empty name (a script's unset
    variable) must never fall back to the host, and a name that is no namespace (nor one
    that bpfwall left a scope for, which `down` and `status` still reach) is a typo."""
    from . import netns, scope

    if value is None:
        return None
    problem = None
    if not value:
        problem = "the name is empty; leave --netns out to mean the host"
    elif "/" in value or value in (".", "..") or len(value) > NETNS_NAME_MAX or not value.isprintable():
        problem = f"{clip(repr(value))} is not a network namespace name"
    elif not netns.exists(value) and value not in scope.namespace_scopes():
        problem = f"network namespace '{value}' does not exist ('ip netns list' names those that do)"
    if problem:  # bad input, one line, as every other error: exit 2 before anything runs
        click.echo(f"bpfwall: --netns: {problem}", err=True)
        (ctx or click.get_current_context()).exit(2)
    return value


netns_option = click.option("--netns", "ns", metavar="NS", callback=netns_name,
                            help="Network namespace of the interfaces (by its name in /run/netns).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
