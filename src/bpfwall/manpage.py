"""bpfwall(8), generated from the CLI itself: python -m bpfwall.manpage > bpfwall.8

One page for the whole command (click-man would write a page per subcommand, and the
commands are short enough to read together), so the options and help texts never
drift from what `bpfwall COMMAND --help` says.
"""

from __future__ import annotations

import datetime
import inspect
import sys

import click

from . import cli


def _roff(text: str) -> str:
    """Escapes text for roff: backslashes, and a leading dot or quote on a line."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _help(text: str | None) -> str:
    """A docstring as roff paragraphs (roff fills the lines itself)."""
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return "\n.PP\n".join(_roff(" ".join(p.split())) for p in paragraphs if p.strip())


def _options(ctx: click.Context, command: click.Command) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text or "")]
    return out


def render() -> str:
    group = cli.main
    ctx = click.Context(group, info_name="bpfwall")
    date = datetime.date.today().isoformat()
    out = [f'.TH BPFWALL 8 "{date}" "bpfwall" "System Administration"', ".SH NAME",
           "bpfwall \\- an XDP host firewall with an nftables-class rule language", ".SH SYNOPSIS",
           "\\fBbpfwall\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]", ".SH DESCRIPTION", _help(group.help),
           ".SH COMMANDS"]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        out += [".SS " + _roff(f"bpfwall {name} {' '.join(command.collect_usage_pieces(sub))}"),
                _help(command.help), *(_options(sub, command))]
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(sub):
                leaf = command.get_command(sub, sub_name)
                leaf_ctx = click.Context(leaf, info_name=sub_name, parent=sub)
                out += [".SS " + _roff(f"bpfwall {name} {sub_name} {' '.join(leaf.collect_usage_pieces(leaf_ctx))}"),
                        _help(leaf.help), *_options(leaf_ctx, leaf)]
    out += [".SH FILES", ".TP", "/etc/bpfwall/bpfwall.yaml", "the rule file the bpfwall service applies at boot",
            ".TP", "/sys/fs/bpf/bpfwall/", "pinned links, programs and maps (root's)",
            ".TP", "/run/bpfwall/", "what was applied, the journal of an apply, the lock",
            ".SH EXIT STATUS", "0 success, 1 runtime failure, 2 bad input (rule file, arguments).",
            ".SH SEE ALSO", "\\fBnft\\fR(8), \\fBiptables\\fR(8), \\fBbpftool\\fR(8); README.md of bpfwall"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
